"""`make images REGISTRY=... TAG=...` without Docker: the images BuildKit built, pushed with crane to a real
registry (crane's own registry server, on loopback), read back from it, and pulled from it by the real node's
containerd for a pod, as a cluster's nodes pull what a user pushed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import buildkit
import pytest
import testbed
from common import HERE, binary, free_port
from node import NODE_IP, REGISTRY_PORT, RealNode

pytestmark = pytest.mark.timeout(1200)


def crane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("crane"), *args], capture_output=True, text=True, timeout=300)


def make_images(**env: str) -> subprocess.CompletedProcess[str]:
    """`make images` as a user runs it, with BuildKit (there is no Docker engine here)."""
    return subprocess.run(["make", "--no-print-directory", "images", *(f"{k}={v}" for k, v in env.items())],
                          cwd=HERE.parents[1], capture_output=True, text=True, timeout=1100,
                          env={**os.environ, "BUILDER": "buildkit"})  # fmt: skip


def archive_config(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest["Config"]))  # type: ignore[no-any-return, arg-type]


def test_make_images_with_a_registry_pushes_the_built_images_and_the_real_node_pulls_and_runs_them(
    registry: testbed.Registry, control_plane: testbed.ControlPlane, node_namespace: str, real_node: RealNode
) -> None:
    address = registry.address
    done = make_images(REGISTRY=f"{address}/slipway", TAG="0.1.0", IMAGES="operator server")
    assert done.returncode == 0, done.stderr[-3000:]
    archives = buildkit.image_archives(["operator", "server"])
    for name in ("operator", "server"):
        ref = f"{address}/slipway/{name}:0.1.0"
        digest = crane("digest", ref)
        assert digest.returncode == 0, digest.stderr
        assert f"{address}/slipway/{name}@{digest.stdout.strip()}" in done.stdout  # what make printed
        pushed = json.loads(crane("config", ref).stdout)
        built = archive_config(archives[name])
        assert pushed["rootfs"]["diff_ids"] == built["rootfs"]["diff_ids"]  # type: ignore[index]  # the same layers
        assert pushed["config"]["User"].split(":")[0] == "1000"  # non-root, as the chart's pods ask

    # The real node pulls the operator image from the registry and runs it. Pulled under its own image ID (a label
    # added in the registry): containerd 1.6's CRI does not see a later `ctr images import` of an image ID it has
    # already pulled under another name, which would hide the operator image the other tests import.
    relabelled = crane("mutate", f"{address}/slipway/operator:0.1.0", "--label", "slipway.dev/test=pull",
                       "--tag", f"{address}/slipway/operator:pull")  # fmt: skip
    assert relabelled.returncode == 0, relabelled.stderr
    image = f"{NODE_IP}:{REGISTRY_PORT}/slipway/operator:pull"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pulled"},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "main", "image": image, "imagePullPolicy": "Always",
               "command": ["python", "-c", "import slipway_operator, os; print('pulled, uid', os.getuid())"],
               "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                   "capabilities": {"drop": ["ALL"]}}}]}}  # fmt: skip
    control_plane.kubectl("apply", "-n", node_namespace, "-f", "-", input=json.dumps(pod))
    status: dict[str, object] = {}
    for _ in range(180):
        status = json.loads(control_plane.kubectl("get", "pod", "pulled", "-n", node_namespace, "-o", "json"))["status"]
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    assert status.get("phase") == "Succeeded", json.dumps(status, indent=1)
    (container,) = status["containerStatuses"]  # type: ignore[misc]
    pushed = crane("digest", f"{address}/slipway/operator:pull").stdout.strip()
    assert container["imageID"].endswith(pushed), (container["imageID"], pushed)
    assert "pulled, uid 1000" in control_plane.kubectl("logs", "pulled", "-n", node_namespace)


def test_a_registry_that_does_not_answer_fails_make_images_with_the_address_and_what_to_check() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    done = make_images(REGISTRY=f"{nowhere}/slipway", TAG="0.1.0", IMAGES="operator")
    assert done.returncode != 0
    assert "pushing" in done.stderr and f"{nowhere}/slipway/operator:0.1.0" in done.stderr, done.stderr[-2000:]
    assert "logged in" in done.stderr
