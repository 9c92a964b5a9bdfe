"""The generated CRDs behave as users expect on a real API server: examples apply, defaults match the
models, started runs keep their spec, status survives, kubectl shows columns and descriptions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

from slipway_operator.api import BY_KIND
from slipway_operator.api.validation import validate_manifest

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*/*.yaml"))


def kubectl(plane: testbed.ControlPlane, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [testbed.binary("kubectl"), "--kubeconfig", str(plane.kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def get(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", kind, name, "-n", namespace, "-o", "json"))


def test_examples_cover_all_four_kinds_twice() -> None:
    kinds = [yaml.safe_load(f.read_text())["kind"] for f in EXAMPLE_FILES]
    assert sorted(kinds) == sorted(list(BY_KIND) * 2)


def test_every_example_is_accepted_and_listed_under_the_slipway_category(
    slipway_crds: testbed.ControlPlane, namespace: str
) -> None:
    for path in EXAMPLE_FILES:
        result = kubectl(slipway_crds, "apply", "-n", namespace, "-f", str(path))
        assert result.returncode == 0, f"{path}: {result.stderr}"
    listed = slipway_crds.kubectl("get", "slipway", "-n", namespace, "-o", "name").split()
    assert len(listed) == len(EXAMPLE_FILES)
    assert "trainingrun.slipway.dev/fashion-cnn" in listed
    short = slipway_crds.kubectl("get", "tr,sweep,dsp,md", "-n", namespace, "-o", "name").split()
    assert sorted(short) == sorted(listed)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[f"{p.parent.name}/{p.name}" for p in EXAMPLE_FILES])
def test_api_server_defaults_equal_the_models_defaults(
    path: Path, slipway_crds: testbed.ControlPlane, namespace: str
) -> None:
    manifest = yaml.safe_load(path.read_text())
    manifest["metadata"]["namespace"] = namespace
    stored = json.loads(
        slipway_crds.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(manifest))
    )
    local = validate_manifest(manifest).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["spec"] == local


def test_a_started_run_keeps_its_spec_but_can_be_suspended(slipway_crds: testbed.ControlPlane, namespace: str) -> None:
    slipway_crds.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml"))
    refused = kubectl(
        slipway_crds,
        "patch",
        "trainingrun",
        "fashion-cnn",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"training": {"epochs": 50}}}',
    )
    assert refused.returncode != 0
    assert "spec.training cannot change once the TrainingRun exists: create a new TrainingRun instead" in (
        refused.stderr
    )
    allowed = kubectl(
        slipway_crds,
        "patch",
        "trainingrun",
        "fashion-cnn",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true, "ttlSecondsAfterFinished": 60}}',
    )
    assert allowed.returncode == 0, allowed.stderr
    assert get(slipway_crds, "trainingrun", "fashion-cnn", namespace)["spec"]["suspend"] is True


def test_status_is_kept_and_shown_in_printer_columns(slipway_crds: testbed.ControlPlane, namespace: str) -> None:
    slipway_crds.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml"))
    status = {
        "observedGeneration": 1,
        "phase": "Running",
        "progress": "epoch 3/10",
        "keyMetric": "val_accuracy=0.884",
        "epoch": 3,
        "metrics": {"val_accuracy": 0.884, "train_loss": 0.31},
        "lineage": {"datasetRef": "fashion", "datasetFingerprint": "sha256:abc123"},
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Training", "message": "epoch 3 of 10"},
        ],
        "notAField": "pruned",
    }
    slipway_crds.kubectl(
        "patch",
        "trainingrun",
        "fashion-cnn",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    stored = get(slipway_crds, "trainingrun", "fashion-cnn", namespace)["status"]
    expected = {k: v for k, v in status.items() if k != "notAField"}
    for key, value in expected.items():
        assert stored[key] == value, key
    assert "notAField" not in stored  # unknown status fields are pruned by the schema
    table = slipway_crds.kubectl("get", "trainingrun", "fashion-cnn", "-n", namespace)
    header, row = table.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "METRIC", "AGE"]
    assert "Running" in row and "epoch 3/10" in row and "val_accuracy=0.884" in row
    wide = slipway_crds.kubectl("get", "trainingrun", "fashion-cnn", "-n", namespace, "-o", "wide")
    assert "sha256:abc123" in wide


def test_kubectl_explain_describes_the_fields(slipway_crds: testbed.ControlPlane) -> None:
    text = slipway_crds.kubectl("explain", "trainingrun.spec.optimizer")
    assert "Optimizer and learning-rate schedule." in text
    assert "learningRate" in text and "Initial learning rate." in text
    assert "sgd (with momentum), adam or adamw." in text
    sweep = slipway_crds.kubectl("explain", "tuningsweep.spec.searchSpace")
    assert "optimizer.learningRate" in sweep


def test_every_spec_field_has_a_description(slipway_crds: testbed.ControlPlane) -> None:
    missing = []
    for kind in BY_KIND.values():
        crd = json.loads(slipway_crds.kubectl("get", "crd", kind.crd_name, "-o", "json"))
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

        def walk(node: dict[str, Any], path: str) -> None:
            for name, child in node.get("properties", {}).items():
                if not child.get("description"):
                    missing.append(f"{path}.{name}")
                walk(child, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}{{}}")

        walk(schema, f"{kind.kind}.spec")
    assert missing == []
