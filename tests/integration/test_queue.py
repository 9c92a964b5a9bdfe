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


def queues(namespace: str, cpus: int, preemption: bool = False) -> list[dict[str, Any]]:
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
                "queueingStrategy": "BestEffortFIFO",  # every waiting run gets Kueue's verdict
                **({"preemption": {"withinClusterQueue": "LowerPriority"}} if preemption else {}),
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


def prep(name: str, queue: str, priority_class: str = "", cpus: float = 2) -> str:
    doc = yaml.safe_load((EXAMPLES / "fashion-mnist" / "01-datasetprep.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["resources"] |= {"queue": queue, "cpusPerWorker": cpus}  # and 250m for the head
    if priority_class:
        doc["spec"]["resources"]["priorityClassName"] = priority_class
    return json.dumps(doc)


def _status(plane: testbed.ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        json.loads(plane.kubectl("get", "datasetprep", name, "-n", namespace, "-o", "json")).get("status") or {}
    )


def _suspended(plane: testbed.ControlPlane, namespace: str, name: str) -> bool | None:
    out = plane.kubectl("get", "rayjob", f"{name}-prep", "-n", namespace, "-o", "json", check=False)
    return bool(json.loads(out)["spec"].get("suspend")) if out else None


def test_runs_wait_in_kueue_for_quota_in_order_and_start_when_it_frees(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: None
) -> None:
    plane = control_plane

    def status(name: str) -> dict[str, Any]:
        return _status(plane, namespace, name)

    def suspended(name: str) -> bool | None:
        return _suspended(plane, namespace, name)

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
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=prep("huge", "team", cpus=8))

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

            def never() -> dict[str, Any]:
                found = [c for c in status("huge").get("conditions") or [] if c["type"] == "Stalled"]
                return found[0] if found and found[0]["status"] == "True" else {}

            testbed.wait_until("the run larger than the whole quota to say so", never, 60)
            assert never()["reason"] == "QuotaNeverFits" and "maximum capacity" in never()["message"], never()

            plane.kubectl("delete", "datasetprep", "first", "-n", namespace, "--wait=true", "--timeout=60s")
            testbed.wait_until("second admitted once first's quota is free", lambda: suspended("second") is False, 60)
            testbed.wait_until("third moved up", lambda: (status("third").get("queue") or {}).get("position") == 1, 60)
            assert suspended("third") is True

    finally:
        for doc in reversed(queues(namespace, cpus=3)):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, "--wait=false",
                          check=False)  # fmt: skip


def test_a_higher_priority_run_preempts_a_lower_one_which_waits_again_as_preempted_and_is_admitted_after_it(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: None
) -> None:
    """PriorityClasses low and high, a ClusterQueue that preempts lower priorities within itself and fits one run:
    the low-priority run is admitted, the high-priority one takes its quota (Kueue suspends the low one's RayJob
    again), the low one says `Preempted` with its place, and is admitted again once the high one is gone."""
    plane = control_plane
    classes = [{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": f"{namespace}-{n}"},
                "value": v} for n, v in (("low", 10), ("high", 1000))]  # fmt: skip
    objects = [*classes, *queues(namespace, cpus=3, preemption=True)]
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"],
                        timeout=180):  # fmt: skip
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=prep("low", "team", f"{namespace}-low"))
            testbed.wait_until("low admitted", lambda: _suspended(plane, namespace, "low") is False, 60)
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=prep("high", "team", f"{namespace}-high"))
            testbed.wait_until("high admitted", lambda: _suspended(plane, namespace, "high") is False, 60)
            assert _suspended(plane, namespace, "low") is True  # Kueue took its quota back

            def preempted() -> dict[str, Any]:
                found = [c for c in _status(plane, namespace, "low").get("conditions") or []
                         if c["type"] == "Reconciling" and c["reason"] == "Preempted"]  # fmt: skip
                return found[0] if found else {}

            testbed.wait_until("low to say it was preempted", preempted, 60)
            assert "queued again in LocalQueue team, position 1" in preempted()["message"], preempted()
            assert "prioritization" in preempted()["message"] and _status(plane, namespace, "low")["phase"] == "Pending"

            plane.kubectl("delete", "datasetprep", "high", "-n", namespace, "--wait=true", "--timeout=60s")
            testbed.wait_until("low admitted again", lambda: _suspended(plane, namespace, "low") is False, 60)
            testbed.wait_until("low's status says admitted", lambda: (_status(plane, namespace, "low").get("queue")
                               or {}).get("admitted") is True, 60)  # fmt: skip
    finally:
        for doc in reversed(objects):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, "--wait=false",
                          check=False)  # fmt: skip


def training(name: str) -> str:
    doc = yaml.safe_load((EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["dataset"] = {"uri": "s3://slipway/datasets/fashion"}  # never read: no workload runs here
    doc["spec"]["resources"] = {"workers": 1, "cpusPerWorker": 2, "memory": "4Gi", "queue": "team"}
    return json.dumps(doc)


def test_a_suspended_queued_run_gives_its_quota_to_the_next_and_queues_again_when_resumed(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: None
) -> None:
    """spec.suspend on a queued, admitted TrainingRun: the operator sets its Kueue Workload inactive (Kueue's way to
    suspend), Kueue evicts it and suspends its RayJob, and the next run gets the quota; resumed, it is queued again."""
    plane = control_plane

    def status(name: str) -> dict[str, Any]:
        return dict(json.loads(plane.kubectl("get", "trainingrun", name, "-n", namespace, "-o", "json")).get("status")
                    or {})  # fmt: skip

    def suspended(name: str) -> bool | None:
        out = plane.kubectl("get", "rayjob", f"{name}-train", "-n", namespace, "-o", "json", check=False)
        return bool(json.loads(out)["spec"].get("suspend")) if out else None

    def active(name: str) -> bool | None:
        found = json.loads(plane.kubectl("get", "workloads", "-n", namespace, "-o", "json"))["items"]
        mine = [w for w in found if w["metadata"]["ownerReferences"][0]["name"] == f"{name}-train"]
        return bool(mine[0]["spec"].get("active", True)) if mine else None

    objects = queues(namespace, cpus=3)
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"],
                        timeout=180):  # fmt: skip
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=training("a"))
            testbed.wait_until("a admitted", lambda: suspended("a") is False, 60)
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=training("b"))
            testbed.wait_until("b waiting", lambda: (status("b").get("queue") or {}).get("position") == 1, 60)

            patch = json.dumps({"spec": {"suspend": True}})
            plane.kubectl("patch", "trainingrun", "a", "-n", namespace, "--type=merge", "-p", patch)
            testbed.wait_until("a's Workload inactive", lambda: active("a") is False, 60)
            testbed.wait_until("a's RayJob suspended by Kueue", lambda: suspended("a") is True, 60)
            testbed.wait_until("b admitted in its place", lambda: suspended("b") is False, 60)
            testbed.wait_until("a says Suspended", lambda: status("a").get("phase") == "Suspended", 60)

            patch = json.dumps({"spec": {"suspend": False}})
            plane.kubectl("patch", "trainingrun", "a", "-n", namespace, "--type=merge", "-p", patch)
            testbed.wait_until("a's Workload active again", lambda: active("a") is True, 60)
            testbed.wait_until("a queued again behind b", lambda: status("a").get("phase") == "Pending" and
                               (status("a").get("queue") or {}).get("position") == 1, 60)  # fmt: skip
            assert suspended("a") is True
    finally:
        for doc in reversed(objects):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, "--wait=false",
                          check=False)  # fmt: skip


def gpu_queues(namespace: str, gpus: int) -> list[dict[str, Any]]:
    """Kueue's pattern for a cluster of CPU and GPU nodes: flavor `cpu` (the CPU pool's nodes, no GPUs) before flavor
    `h100` (the GPU pool's nodes and their taint), one resource group, `gpus` GPUs of quota: a pod set that asks for
    no GPU gets the CPU pool, one that does gets the GPU pool."""
    cq = f"slipway-{namespace}-gpu"
    pool = {"node.kubernetes.io/instance-type": "gpu-8xh100"}
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": f"{cq}-cpu"},
         "spec": {"nodeLabels": {"node.kubernetes.io/instance-type": "cpu-32"}}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": f"{cq}-h100"},
         "spec": {"nodeLabels": pool, "nodeTaints": [{"key": "nvidia.com/gpu", "value": "present",
                                                       "effect": "NoSchedule"}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": cq},
         "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                  "queueingStrategy": "BestEffortFIFO",
                  "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [
                      {"name": f"{cq}-cpu", "resources": [{"name": "cpu", "nominalQuota": 8},
                                                          {"name": "memory", "nominalQuota": "64Gi"},
                                                          {"name": "nvidia.com/gpu", "nominalQuota": 0}]},
                      {"name": f"{cq}-h100", "resources": [{"name": "cpu", "nominalQuota": 32},
                                                           {"name": "memory", "nominalQuota": "256Gi"},
                                                           {"name": "nvidia.com/gpu", "nominalQuota": gpus}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": "gpus", "namespace": namespace}, "spec": {"clusterQueue": cq}},
    ]  # fmt: skip


def test_gpu_runs_share_the_gpu_quota_each_admitted_whole_with_its_pods_placed_on_the_pools(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: None
) -> None:
    """Two GPU TrainingRuns (2 workers x 1 GPU) on a quota of 2 GPUs: the first is admitted whole — one Workload with
    every pod set of its Ray cluster (head, workers, submitter), so no half-started gang holds GPUs — its workers
    placed on the GPU pool by the flavor's node labels and the head on the CPU pool; the second waits for
    nvidia.com/gpu, in Kueue's words; when the first goes, the second is admitted."""
    plane = control_plane

    def status(name: str) -> dict[str, Any]:
        return dict(json.loads(plane.kubectl("get", "trainingrun", name, "-n", namespace, "-o", "json")).get("status")
                    or {})  # fmt: skip

    def rayjob(name: str) -> dict[str, Any]:
        out = plane.kubectl("get", "rayjob", f"{name}-train", "-n", namespace, "-o", "json", check=False)
        return dict(json.loads(out)) if out else {}

    def admitted(name: str) -> bool:  # Kueue unsuspends it (suspend: false is left out)
        job = rayjob(name)
        return bool(job) and not job["spec"].get("suspend")

    def gpu_run(name: str, workers: int) -> str:
        doc = json.loads(training(name))
        doc["spec"]["resources"] = {"workers": workers, "cpusPerWorker": 2, "memory": "4Gi", "gpusPerWorker": 1,
                                    "queue": "gpus"}  # fmt: skip
        return json.dumps(doc)

    objects = gpu_queues(namespace, gpus=2)
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"],
                        timeout=180):  # fmt: skip
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=gpu_run("a", 2))
            testbed.wait_until("a admitted", lambda: admitted("a"), 60)
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=gpu_run("b", 2))
            testbed.wait_until("Kueue's words for what b waits for", lambda: "nvidia.com/gpu" in
                               str((status("b").get("queue") or {}).get("message")), 60)  # fmt: skip
            assert status("b")["queue"]["position"] == 1 and not admitted("b"), status("b")

            cluster = rayjob("a")["spec"]["rayClusterSpec"]
            head = cluster["headGroupSpec"]["template"]["spec"]
            workers = cluster["workerGroupSpecs"][0]["template"]["spec"]
            assert workers["nodeSelector"]["node.kubernetes.io/instance-type"] == "gpu-8xh100", workers
            assert head["nodeSelector"]["node.kubernetes.io/instance-type"] == "cpu-32", head
            found = json.loads(plane.kubectl("get", "workloads", "-n", namespace, "-o", "json"))["items"]
            (workload,) = [w for w in found if w["metadata"]["ownerReferences"][0]["name"] == "a-train"]
            assigned = {a["name"]: a for a in workload["status"]["admission"]["podSetAssignments"]}
            assert len(assigned) == len(workload["spec"]["podSets"]) == 3, assigned  # head, workers, submitter
            gpu_sets = [a for a in assigned.values() if "nvidia.com/gpu" in a.get("flavors", {})]
            assert len(gpu_sets) == 1 and gpu_sets[0]["count"] == 2, assigned

            plane.kubectl("delete", "trainingrun", "a", "-n", namespace, "--wait=true", "--timeout=60s")
            testbed.wait_until("b admitted once a's GPUs are free", lambda: admitted("b"), 60)
    finally:
        for doc in reversed(objects):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", namespace, "--wait=false",
                          check=False)  # fmt: skip
