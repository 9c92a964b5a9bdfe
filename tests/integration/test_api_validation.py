"""Bad manifests are refused with a message a person can act on, by the API server and by `slipway run`.

Each case starts from an example a user would apply, breaks one thing, and expects the field's path and
the rule in words from both the real API server (server-side dry run) and the local validator, which
evaluates the same CEL rules. Rules CEL cannot express are the local validator's alone (the operator
reports them as InvalidSpec); the table says so explicitly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

from slipway_operator.api.validation import InvalidManifest, validate_manifest

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = {
    "DatasetPrep": EXAMPLES / "fashion-mnist" / "01-datasetprep.yaml",
    "TrainingRun": EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml",
    "TuningSweep": EXAMPLES / "fashion-mnist" / "03-tuningsweep.yaml",
    "ModelDeployment": EXAMPLES / "fashion-mnist" / "04-modeldeployment.yaml",
    "MpgPrep": EXAMPLES / "auto-mpg" / "01-datasetprep.yaml",
}


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)

    return apply


DELETE = object()


@dataclass(frozen=True)
class Case:
    id: str
    base: str
    change: tuple[Callable[[dict[str, Any]], None], ...]
    field: str
    server: str  # what the API server's message must contain
    local: str | None = None  # what the local validator's must contain (default: the same)
    server_field: str | None = None  # where the API server's path differs (schema errors under map keys)


def case(id: str, base: str, field: str, server_msg: str, local_msg: str | None = None, /, **changes: Any) -> Case:
    changed = tuple(setter(k.replace("__", "/"), v) for k, v in changes.items())
    return Case(id, base, changed, field, server_msg, local_msg)


# Paths in `changes` use `__` for nesting below spec: `split={...}` sets spec.split.
CASES = [
    # --- DatasetPrep ---
    case(
        "split-does-not-sum-to-1",
        "DatasetPrep",
        "spec.split",
        "split fractions train + validation + test must add up to 1",
        split={"train": 0.7, "validation": 0.1, "test": 0.1},
    ),
    case(
        "source-uri-scheme",
        "DatasetPrep",
        "spec.source.uri",
        "must be a URI starting with s3://, https://, file:// or builtin://",
        source__uri="ftp://example.org/data.csv",
    ),
    case(
        "source-format-unknown",
        "DatasetPrep",
        "spec.source.format",
        'Unsupported value: "xlsx"',
        "Input should be 'csv', 'parquet', 'jsonl', 'imagefolder', 'idx' or 'payloads'",
        source__format="xlsx",
    ),
    case("source-missing", "DatasetPrep", "spec.source", "Required value", source=DELETE),
    case(
        "sample-rows-and-fraction",
        "DatasetPrep",
        "spec.sample",
        "sample: set exactly one of rows or fraction",
        sample={"rows": 100, "fraction": 0.5},
    ),
    case(
        "constant-without-value",
        "MpgPrep",
        "spec.cleaning.missing",
        "every column whose missing-value strategy is constant needs its fill value in values",
        cleaning__missing__columns={"Horsepower": "constant"},
    ),
    case(
        "resize-without-size",
        "DatasetPrep",
        "spec.transforms[0]",
        "a resize transform needs size: [height, width]",
        transforms=[{"type": "resize"}],
    ),
    case(
        "transform-type-unknown",
        "DatasetPrep",
        "spec.transforms[0].type",
        'Unsupported value: "whiten"',
        "Input should be 'standardize'",
        transforms=[{"type": "whiten"}],
    ),
    case(
        "hash-without-salt",
        "MpgPrep",
        "spec.privacy",
        "hashColumns needs saltSecretRef: the Secret key that holds the salt",
        privacy={"hashColumns": ["Name"]},
    ),
    case(
        "output-over-https",
        "DatasetPrep",
        "spec.output.uri",
        "must be a URI starting with s3:// or file://",
        output={"uri": "https://example.org/out"},
    ),
    case(
        "train-fraction-zero",
        "DatasetPrep",
        "spec.split.train",
        "should be greater than 0",
        "Input should be greater than 0",
        split={"train": 0.0, "validation": 0.5, "test": 0.5},
    ),
    case(
        "unknown-field",
        "DatasetPrep",
        "spec.cleaning.dropDupes",
        'unknown field "spec.cleaning.dropDupes"',
        cleaning__dropDupes=True,
    ),
    case(
        "memory-not-a-quantity",
        "DatasetPrep",
        "spec.resources.memory",
        "should match",
        "String should match pattern",
        resources__memory="lots",
    ),
    case(
        "stratify-by-dropped-column",
        "MpgPrep",
        "spec",
        "split.stratifyBy names a column that privacy.dropColumns removes",
        split__stratifyBy="Name",
    ),
    # --- TrainingRun ---
    case(
        "dataset-ref-and-uri",
        "TrainingRun",
        "spec.dataset",
        "set exactly one of dataset.ref (a DatasetPrep) or dataset.uri (a prepared dataset)",
        dataset={"ref": "fashion", "uri": "s3://bucket/datasets/fashion"},
    ),
    case("dataset-neither", "TrainingRun", "spec.dataset", "set exactly one of dataset.ref", dataset={}),
    case(
        "architecture-unknown",
        "TrainingRun",
        "spec.model.architecture",
        'Unsupported value: "vit"',
        "Input should be 'mlp', 'cnn'",
        model__architecture="vit",
    ),
    case(
        "epochs-zero",
        "TrainingRun",
        "spec.training.epochs",
        "should be greater than or equal to 1",
        "Input should be greater than or equal to 1",
        training__epochs=0,
    ),
    case(
        "negative-learning-rate",
        "TrainingRun",
        "spec.optimizer.learningRate",
        "should be greater than 0",
        "Input should be greater than 0",
        optimizer__learningRate=-0.1,
    ),
    case(
        "early-stopping-on-train-metric",
        "TrainingRun",
        "spec.training.earlyStopping",
        "earlyStopping.metric must be a validation metric",
        training__earlyStopping={"metric": "accuracy"},
    ),
    case(
        "error-metric-maximized",
        "TrainingRun",
        "spec.objective",
        "objective.direction must be minimize for an error metric",
        objective={"loss": "mse", "metric": "mse", "direction": "maximize"},
    ),
    case(
        "regression-loss-classification-metric",
        "TrainingRun",
        "spec.objective",
        "objective.metric is a classification metric but the loss is a regression loss",
        objective={"loss": "mse", "metric": "accuracy", "direction": "maximize"},
    ),
    case(
        "augmentation-on-mlp",
        "TrainingRun",
        "spec",
        "regularization.augmentation applies to image models only",
        model={"architecture": "mlp"},
    ),
    case(
        "no-export-format",
        "TrainingRun",
        "spec.export.formats",
        "should have at least 1 items",
        "List should have at least 1 item",
        export={"formats": []},
    ),
    case(
        "pickle-export",
        "TrainingRun",
        "spec.export.formats[0]",
        'Unsupported value: "pickle"',
        "Input should be 'onnx' or 'torchscript'",
        export={"formats": ["pickle"]},
    ),
    case(
        "patience-beyond-epochs",
        "TrainingRun",
        "spec",
        "training.earlyStopping.patience must be smaller than training.epochs",
        training={"epochs": 3, "earlyStopping": {"metric": "val_loss", "patience": 3}},
    ),
    case(
        "dataset-uri-https",
        "TrainingRun",
        "spec.dataset.uri",
        "must be a URI starting with s3:// or file://",
        dataset={"uri": "https://example.org/ds"},
    ),
    case(
        "too-many-gpus",
        "TrainingRun",
        "spec.resources.gpusPerWorker",
        "should be less than or equal to 16",
        "Input should be less than or equal to 16",
        resources__gpusPerWorker=100,
    ),
    case(
        "toleration-operator",
        "TrainingRun",
        "spec.resources.tolerations[0].operator",
        'Unsupported value: "Maybe"',
        "Input should be 'Exists' or 'Equal'",
        resources__tolerations=[{"key": "a", "operator": "Maybe"}],
    ),
    # --- TuningSweep ---
    case(
        "parallel-beyond-max",
        "TuningSweep",
        "spec",
        "parallelTrials must be at most maxTrials",
        parallelTrials=20,
        maxTrials=4,
    ),
    case(
        "loguniform-from-zero",
        "TuningSweep",
        "spec.searchSpace[optimizer.learningRate]",
        "loguniform: [low, high] needs 0 < low < high",
        searchSpace={"optimizer.learningRate": {"loguniform": [0.0, 0.1]}},
    ),
    case(
        "uniform-reversed",
        "TuningSweep",
        "spec.searchSpace[model.params.dropout]",
        "uniform: [low, high] needs low < high",
        searchSpace={"model.params.dropout": {"uniform": [0.5, 0.1]}},
    ),
    case(
        "search-key-not-a-path",
        "TuningSweep",
        "spec.searchSpace",
        "searchSpace keys must be paths of template fields",
        searchSpace={"learningRate": {"loguniform": [0.0001, 0.1]}},
    ),
    case(
        "asha-on-train-metric",
        "TuningSweep",
        "spec",
        "objective.metric must be a validation metric (val_...) for the asha",
        objective={"metric": "accuracy", "direction": "maximize"},
    ),
    case(
        "grace-beyond-epochs",
        "TuningSweep",
        "spec",
        "scheduler.gracePeriod must be smaller than template.training.epochs",
        scheduler={"type": "asha", "gracePeriod": 6},
    ),
    dataclasses.replace(
        case(
            "empty-choice",
            "TuningSweep",
            "spec.searchSpace[training.batchSize].choice",
            "should have at least 1 items",
            "List should have at least 1 item",
            searchSpace={"training.batchSize": {"choice": []}},
        ),
        # The API server writes map keys in brackets for CEL errors but with dots for schema errors.
        server_field="spec.searchSpace.training.batchSize.choice",
    ),
    case(
        "scheduler-unknown",
        "TuningSweep",
        "spec.scheduler.type",
        'Unsupported value: "hyperband"',
        "Input should be 'fifo', 'asha' or 'median'",
        scheduler={"type": "hyperband"},
    ),
    case(
        "zero-trials",
        "TuningSweep",
        "spec.maxTrials",
        "should be greater than or equal to 1",
        "Input should be greater than or equal to 1",
        maxTrials=0,
        parallelTrials=1,
    ),
    # --- ModelDeployment ---
    case(
        "two-model-sources",
        "ModelDeployment",
        "spec.model",
        "set exactly one of model.fromTrainingRun, model.fromTuningSweep or model.uri",
        model={"fromTrainingRun": "fashion-cnn", "uri": "s3://bucket/models/x"},
    ),
    case(
        "registry-uri-without-version-or-alias",
        "ModelDeployment",
        "spec.model.uri",
        "models:/<name>/<version> or models:/<name>@<alias>",
        model={"uri": "models:/fashion"},
    ),
    case(
        "registry-alias-reserved",
        "ModelDeployment",
        "spec.registry",
        "registry.alias cannot be latest or v<number>",
        registry={"name": "fashion", "alias": "v2"},
    ),
    case(
        "replicas-min-above-max",
        "ModelDeployment",
        "spec.replicas",
        "replicas.min must be at most replicas.max",
        replicas={"min": 3, "max": 2},
    ),
    case(
        "canary-steps-decreasing",
        "ModelDeployment",
        "spec.rollout.canary.steps",
        "canary steps must be strictly increasing percentages",
        rollout__canary__steps=[50, 10, 100],
    ),
    case(
        "canary-step-zero",
        "ModelDeployment",
        "spec.rollout.canary.steps[0]",
        "should be greater than or equal to 1",
        "Input should be greater than or equal to 1",
        rollout__canary__steps=[0, 50],
    ),
    case(
        "canary-step-above-100",
        "ModelDeployment",
        "spec.rollout.canary.steps[1]",
        "should be less than or equal to 100",
        "Input should be less than or equal to 100",
        rollout__canary__steps=[10, 150],
    ),
    case(
        "shadow-without-canary",
        "ModelDeployment",
        "spec.rollout",
        "rollout.shadow is a stage before the canary: it needs strategy canary",
        rollout={"strategy": "rolling", "shadow": {"minRequests": 10}},
    ),
    case(
        "shadow-agreement-above-one",
        "ModelDeployment",
        "spec.rollout.shadow.minAgreement",
        "should be less than or equal to 1",
        "Input should be less than or equal to 1",
        rollout__shadow={"minAgreement": 1.5},
    ),
    case(
        "autoscaling-without-room",
        "ModelDeployment",
        "spec",
        "autoscaling needs replicas.max above replicas.min",
        replicas={"min": 2, "max": 2},
        autoscaling={"metric": "concurrency"},
    ),
    case(
        "autoscaling-on-an-unknown-metric",
        "ModelDeployment",
        "spec.autoscaling.metric",
        "supported values",
        "Input should be 'cpu' or 'concurrency'",
        autoscaling={"metric": "memory"},
    ),
    case(
        "canary-without-steps",
        "ModelDeployment",
        "spec.rollout",
        "rollout strategy canary needs rollout.canary",
        rollout={"strategy": "canary"},
    ),
    case(
        "auto-update-without-selector",
        "ModelDeployment",
        "spec.autoUpdate",
        "autoUpdate.enabled needs a selector",
        autoUpdate={"enabled": True},
    ),
    case(
        "drift-method-unknown",
        "ModelDeployment",
        "spec.monitoring.drift.method",
        'Unsupported value: "chi2"',
        "Input should be 'psi' or 'ks'",
        monitoring={"drift": {"method": "chi2"}},
    ),
    case(
        "serve-pickle",
        "ModelDeployment",
        "spec.server.format",
        'Unsupported value: "pickle"',
        "Input should be 'onnx' or 'torchscript'",
        server={"format": "pickle"},
    ),
    case(
        "batch-size-zero",
        "ModelDeployment",
        "spec.server.batching.maxBatchSize",
        "should be greater than or equal to 1",
        "Input should be greater than or equal to 1",
        server={"batching": {"maxBatchSize": 0}},
    ),
]

# What only Slipway can check: the API server accepts these, the local validator (and the operator) refuse.
LOCAL_ONLY = [
    case(
        "search-path-not-in-template",
        "TuningSweep",
        "spec.searchSpace[optimizer.learningRat]",
        "",
        'no field "learningRat" in optimizer',
        searchSpace={"optimizer.learningRat": {"loguniform": [0.0001, 0.1]}},
    ),
    case(
        "parameter-two-kinds",
        "TuningSweep",
        "spec.searchSpace[training.batchSize]",
        "",
        "set exactly one of uniform, loguniform, randint, choice, grid",
        searchSpace={"training.batchSize": {"choice": [64, 128], "randint": [16, 256]}},
    ),
    case(
        "grid-with-a-range",
        "TuningSweep",
        "spec",
        "",
        "algorithm grid needs every searchSpace parameter to be a grid or choice",
        algorithm="grid",
        scheduler={"type": "fifo"},
    ),
    case(
        "choice-value-wrong-type",
        "TuningSweep",
        "spec.searchSpace[training.batchSize]",
        "",
        "value 'big' does not fit training.batchSize",
        searchSpace={"training.batchSize": {"choice": ["big"]}},
    ),
]


def manifest_for(c: Case, namespace: str) -> dict[str, Any]:
    manifest = yaml.safe_load(BASE[c.base].read_text())
    manifest["metadata"] = {"name": f"bad-{c.id}"[:63], "namespace": namespace}
    for change in c.change:
        change(manifest["spec"])
    return manifest


def server_dry_run(plane: testbed.ControlPlane, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [testbed.binary("kubectl"), "--kubeconfig", str(plane.kubeconfig), "create", "--dry-run=server", "-f", "-"],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
    )


def local_errors(manifest: dict[str, Any]) -> list[str]:
    try:
        validate_manifest(manifest)
    except InvalidManifest as err:
        return [str(e) for e in err.errors]
    return []


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES + LOCAL_ONLY}) == len(CASES) + len(LOCAL_ONLY)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_manifest_is_refused_with_the_field_and_the_rule(
    c: Case, slipway_crds: testbed.ControlPlane, namespace: str
) -> None:
    manifest = manifest_for(c, namespace)
    result = server_dry_run(slipway_crds, manifest)
    assert result.returncode != 0, f"the API server accepted it:\n{result.stdout}"
    assert (c.server_field or c.field) in result.stderr, result.stderr
    assert c.server in result.stderr, result.stderr

    errors = local_errors(manifest)
    expected = c.local or c.server
    assert any(e.startswith(f"{c.field}:") and expected in e for e in errors), errors


@pytest.mark.parametrize("c", LOCAL_ONLY, ids=[c.id for c in LOCAL_ONLY])
def test_what_cel_cannot_say_is_refused_locally(c: Case, slipway_crds: testbed.ControlPlane, namespace: str) -> None:
    manifest = manifest_for(c, namespace)
    result = server_dry_run(slipway_crds, manifest)
    assert result.returncode == 0, f"now the API server refuses it too; move it to CASES:\n{result.stderr}"
    errors = local_errors(manifest)
    assert c.local is not None
    assert any(e.startswith(f"{c.field}:") and c.local in e for e in errors), errors
