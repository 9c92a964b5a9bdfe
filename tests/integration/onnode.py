"""Helpers of the tests that run Slipway's resources on the real node: example manifests with changes, waits on a
resource's phase, a RayJob's end, a run's epoch in the store and a RayJob's worker pods, and a steady client of a
Service inside the node's network."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import testbed
import yaml
from node import RealNode

from clients import Background

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLURAL = {"DatasetPrep": "datasetprep", "TrainingRun": "trainingrun", "TuningSweep": "tuningsweep",
          "ModelDeployment": "modeldeployment"}  # fmt: skip


def example(name: str, ns: str, **changes: Any) -> dict[str, Any]:
    """An example manifest (`auto-mpg/01-datasetprep.yaml`) with `changes` set in its spec (dotted keys:
    `training.epochs`; None removes the field)."""
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    doc["metadata"]["namespace"] = ns
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc["spec"]
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def wait_phase(plane: testbed.ControlPlane, doc: dict[str, Any], phases: set[str], timeout: float) -> dict[str, Any]:
    kind, name, ns = PLURAL[doc["kind"]], doc["metadata"]["name"], doc["metadata"]["namespace"]
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = json.loads(plane.kubectl("get", kind, name, "-n", ns, "-o", "json")).get("status") or {}
        if seen.get("phase") in phases:
            return seen
        time.sleep(3)
    pods = plane.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False)
    rayjobs = plane.kubectl("get", "rayjobs", "-n", ns, "-o", "wide", check=False)
    events = plane.kubectl("get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False)
    raise AssertionError(
        f"{doc['kind']} {name}: not {phases} within {timeout:.0f}s\n{json.dumps(seen, indent=1)}\n"
        f"{rayjobs}\n{pods}\n{events[-5000:]}"
    )


def delete(plane: testbed.ControlPlane, *docs: dict[str, Any]) -> None:
    """Delete the resources, in this order, each waited for (its children go with it); one not there is fine."""
    for doc in docs:
        plane.kubectl("delete", PLURAL[doc["kind"]], doc["metadata"]["name"], "-n", doc["metadata"]["namespace"],
                      "--wait=true", "--timeout=120s", check=False)  # fmt: skip


def wait_rayjob_ended(plane: testbed.ControlPlane, ns: str, name: str, timeout: float) -> dict[str, Any]:
    """The RayJob's status once its Ray job has ended (jobStatus SUCCEEDED, FAILED or STOPPED)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = json.loads(plane.kubectl("get", "rayjob", name, "-n", ns, "-o", "json")).get("status") or {}
        if status.get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(2)
    raise AssertionError(f"RayJob {name}: its Ray job did not end within {timeout:.0f}s: {status}")


def progress_of(store: testbed.ObjectStore, key: str) -> Callable[[], dict[str, Any]]:
    """A reader of a run's progress.json in the test store's `slipway` bucket ({} before it exists): read from the
    store, it is seconds ahead of the status, which the operator refreshes every 10 s."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                      aws_secret_access_key=store.secret_key, region_name="us-east-1")  # fmt: skip

    def read() -> dict[str, Any]:
        try:
            return dict(json.loads(s3.get_object(Bucket="slipway", Key=key)["Body"].read()))
        except s3.exceptions.NoSuchKey:
            return {}

    return read


def progress_epoch(store: testbed.ObjectStore, key: str) -> Callable[[], int]:
    """A reader of the epoch in a run's progress.json (0 before it exists)."""
    read = progress_of(store, key)
    return lambda: int(read().get("epoch") or 0)


def ray_workers(plane: testbed.ControlPlane, ns: str, rayjob: str) -> list[dict[str, Any]]:
    """The running worker pods of a RayJob's cluster."""
    selector = "ray.io/node-type=worker"
    pods: list[dict[str, Any]] = json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))[
        "items"
    ]
    return [p for p in pods if p["metadata"]["name"].startswith(rayjob) and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]  # fmt: skip


class Load(Background):
    """Requests to the Service's ClusterIP from inside the node's network, one connection each (the Service
    balances per connection), until stopped, `pause` seconds apart; counts the answers."""

    def __init__(self, node: RealNode, ip: str, model: str, body: bytes, pause: float = 0.05) -> None:
        assert node.net is not None
        net, path = node.net, f"/v2/models/{model}/infer"

        def send() -> int:
            try:
                return int(net.http("POST", ip, 80, path, body, timeout=10)[0])
            except OSError:
                return 0

        super().__init__(send, pause)
