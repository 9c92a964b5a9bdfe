"""Slipway installed on the test bed's real node as a user installs it: the operator and server images built from
images/*/Dockerfile (BuildKit, no network; rebuilt only when what goes into them changed) and loaded into the
node's containerd, the store's bucket `slipway` and its Secret `slipway-store`, and `helm install` of the chart
with values-testbed.yaml into a namespace whose pods all run on the real node.

Used by the session fixture `slipway_on_node` (tests/conftest.py) and by `benchmarks/operator_scale.py --in-pod`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import buildkit
import testbed
from node import NODE_IP, S3_PORT, RealNode, node_namespace_annotations

REPO = Path(__file__).resolve().parents[2]
RELEASE = "slipway"
NAMESPACE = "slipway-system"
VALUES = Path(__file__).resolve().parent / "values-testbed.yaml"


def helm(plane: testbed.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [testbed.binary("helm"), "--kubeconfig", str(plane.kubeconfig), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def create_namespace(plane: testbed.ControlPlane, name: str, annotations: dict[str, str] | None = None) -> None:
    """A namespace, once its ServiceAccount `default` exists (pods need it)."""
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations or {}}}
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    testbed.wait_until(
        f"ServiceAccount default in {name}",
        lambda: plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False) != "",
        30,
    )


def s3_client(store: testbed.ObjectStore) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name="us-east-1",
    )


def install(
    plane: testbed.ControlPlane, node: RealNode, store: testbed.ObjectStore, *helm_args: str, namespace: str = NAMESPACE
) -> None:
    """Images, namespace (its pods on the real node), the store's Secret and bucket, then `helm install --wait`
    with VALUES and `helm_args` (e.g. `--set`); a failed install raises with helm's words and the pods."""
    for archive in buildkit.image_archives(["operator", "server"]).values():
        node.import_image(archive)
    create_namespace(plane, namespace, node_namespace_annotations())
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "slipway-store", "namespace": namespace},
        "stringData": {
            "AWS_ACCESS_KEY_ID": store.access_key,
            "AWS_SECRET_ACCESS_KEY": store.secret_key,
            "AWS_ENDPOINT_URL": f"http://{NODE_IP}:{S3_PORT}",
            "AWS_REGION": "us-east-1",
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    s3_client(store).create_bucket(Bucket="slipway")
    installed = helm(plane, "install", RELEASE, str(REPO / "charts" / "slipway"), "-f", str(VALUES), *helm_args,
                     "-n", namespace, "--create-namespace", "--wait", "--timeout", "4m")  # fmt: skip
    if installed.returncode != 0:
        pods = plane.kubectl("get", "pods", "-n", namespace, "-o", "yaml", check=False)
        raise testbed.TestbedError(f"helm install on the real node failed:\n{installed.stderr}\n{pods[-4000:]}")


def uninstall(plane: testbed.ControlPlane, namespace: str = NAMESPACE) -> None:
    helm(plane, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m")
    plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
