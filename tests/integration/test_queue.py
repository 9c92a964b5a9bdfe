"""Queued runs with Kueue's real manager on the test control plane (KWOK nodes; KubeRay's CRDs, not its
controller): Slipway creates a queued run's RayJob suspended with the LocalQueue label, Kueue makes its Workload,
reserves quota in the ClusterQueue and unsuspends the RayJob, and the run's status says where it stands — admitted,
or waiting at a position for the quota Kueue names — and says so at once when its queue does not exist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml
from kopf.testing import KopfRunner

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def operator_env(kueue: testbed.Kueue, slipway_crds: testbed.ControlPlane, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(slipway_crds.kubeconfig))
    monkeypatch.setenv("SLIPWAY_STORE", (tmp_path / "store").as_uri())
    monkeypatch.setenv("SLIPWAY_IMAGE", "slipway/trainer:test")
    monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")


def queues(namespace: str, cpus: int) -> list[dict[str, Any]]:
    """A flavor, a ClusterQueue with room for `cpus` CPUs, and LocalQueue `team` in the namespace pointing at it."""
    cluster_queue = f"slipway-{namespace}"
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": cluster_queue}},
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "queueingStrategy": "StrictFIFO",
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [{"name": cluster_queue, "resources": [
                        {"name": "cpu", "nominalQuota": cpus}, {"name": "memory", "nominalQuota": "64Gi"}]}],
                }],
            },
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "team", "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]  # fmt: skip


def prep(name: str, queue: str) -> str:
    doc = yaml.safe_load((EXAMPLES / "fashion-mnist" / "01-datasetprep.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["resources"] |= {"queue": queue}  # 2 CPUs per worker and 250m for the head: 2.25 CPUs
    return json.dumps(doc)


def test_runs_wait_in_kueue_for_quota_in_order_and_start_when_it_frees(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: None
) -> None:
    plane = control_plane

    def status(name: str) -> dict[str, Any]:
        return dict(json.loads(plane.kubectl("get", "datasetprep", name, "-n", namespace, "-o", "json")).get("status")
                    or {})  # fmt: skip

    def suspended(name: str) -> bool | None:
        out = plane.kubectl("get", "rayjob", f"{name}-prep", "-n", namespace, "-o", "json", check=False)
        return bool(json.loads(out)["spec"].get("suspend")) if out else None

    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": queues(namespace, cpus=3)}))  # fmt: skip
    try:
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"],
                        timeout=180):  # fmt: skip
            for name in ("first", "second", "third"):  # one fits the quota at a time
                plane.kubectl("apply", "-n", namespace, "-f", "-", input=prep(name, "team"))
                testbed.wait_until(f"{name}'s RayJob", lambda n=name: suspended(n) is not None, 60)
                time.sleep(1.1)  # creation times are to the second: each in its own
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=prep("lost", "nope"))

            testbed.wait_until("first admitted: its RayJob unsuspended by Kueue", lambda: suspended("first") is False,
                               60)  # fmt: skip
            testbed.wait_until("first's status says admitted",
                               lambda: (status("first").get("queue") or {}).get("admitted") is True, 60)  # fmt: skip
            try:
                testbed.wait_until("third's place", lambda: (status("third").get("queue") or {}).get("position") == 2,
                                   60)  # fmt: skip
            except testbed.TestbedError as err:
                raise AssertionError(f"{err}\n{json.dumps(status('third'), indent=1)}") from None
            testbed.wait_until("Kueue's words for what second waits for", lambda: "insufficient unused quota for cpu" in
                               str((status("second").get("queue") or {}).get("message")), 60)  # fmt: skip
            second, third = status("second"), status("third")
            assert suspended("second") is True and suspended("third") is True
            assert second["phase"] == "Pending" and second["queue"]["position"] == 1, second
            queued = next(c for c in second["conditions"] if c["type"] == "Reconciling")
            assert queued["reason"] == "Queued" and "queued in LocalQueue team, position 1" in queued["message"]
            assert "insufficient unused quota for cpu" in second["queue"]["message"], second["queue"]
            assert third["queue"]["admitted"] is False and "position 2" in third["message"], third

            def stalled() -> dict[str, Any]:
                found = [c for c in status("lost").get("conditions") or [] if c["type"] == "Stalled"]
                return found[0] if found and found[0]["status"] == "True" else {}

            testbed.wait_until("the run in a queue that does not exist to say so", stalled, 60)
            assert stalled()["reason"] == "QueueUnavailable" and "nope" in stalled()["message"], stalled()
            assert "spec.resources.queue" in stalled()["message"]

            plane.kubectl("delete", "datasetprep", "first", "-n", namespace, "--wait=true", "--timeout=60s")
            testbed.wait_until("second admitted once first's quota is free", lambda: suspended("second") is False, 60)
            testbed.wait_until("third moved up", lambda: (status("third").get("queue") or {}).get("position") == 1, 60)
            assert suspended("third") is True
    finally:
        for doc in reversed(queues(namespace, cpus=3)):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, "--wait=false",
                          check=False)  # fmt: skip
