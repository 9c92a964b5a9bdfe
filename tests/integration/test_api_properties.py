"""Property tests: any valid spec round-trips through the models, passes the local validator, and is
accepted by the real API server, which stores exactly the defaults the models would fill in."""

from __future__ import annotations

import json
from typing import Any

import pytest
import testbed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipway_operator.api import BY_KIND
from slipway_operator.api.validation import validate_manifest

pytestmark = pytest.mark.cluster

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
QUANTITIES = st.sampled_from(["1", "2", "500m", "512Mi", "4Gi", "16Gi", "1.5"])
S3_OR_FILE = st.builds(lambda s, p: f"{s}://{p}", st.sampled_from(["s3", "file"]), NAMES)
CLASSIFICATION = st.fixed_dictionaries(
    {
        "loss": st.sampled_from(["cross_entropy", "bce"]),
        "metric": st.sampled_from(["accuracy", "f1", "f1_macro", "precision", "recall", "roc_auc"]),
        "direction": st.just("maximize"),
    }
)
REGRESSION = st.one_of(
    st.fixed_dictionaries(
        {
            "loss": st.sampled_from(["mse", "mae", "huber"]),
            "metric": st.sampled_from(["mse", "mae", "rmse"]),
            "direction": st.just("minimize"),
        }
    ),
    st.fixed_dictionaries(
        {"loss": st.sampled_from(["mse", "mae", "huber"]), "metric": st.just("r2"), "direction": st.just("maximize")}
    ),
)


@st.composite
def training_template(draw: st.DrawFn) -> dict[str, Any]:
    architecture = draw(st.sampled_from(["mlp", "cnn", "resnet", "rnn", "lstm", "gru", "transformer", "gan"]))
    epochs = draw(st.integers(1, 200))
    spec: dict[str, Any] = {
        "dataset": draw(st.one_of(st.builds(lambda n: {"ref": n}, NAMES), st.builds(lambda u: {"uri": u}, S3_OR_FILE))),
        "model": {
            "architecture": architecture,
            "params": draw(
                st.dictionaries(
                    st.sampled_from(["hidden", "dropout", "layers", "heads"]),
                    st.one_of(st.integers(1, 512), st.floats(0, 0.9), st.lists(st.integers(1, 256), max_size=4)),
                )
            ),
        },
        "objective": draw(st.one_of(CLASSIFICATION, REGRESSION)),
        "optimizer": {
            "name": draw(st.sampled_from(["sgd", "adam", "adamw"])),
            "learningRate": draw(st.floats(1e-6, 1.0)),
            "weightDecay": draw(st.floats(0, 0.1)),
            "schedule": {
                "type": draw(st.sampled_from(["constant", "cosine", "step"])),
                "warmupEpochs": draw(st.integers(0, 5)),
            },
        },
        "training": {"epochs": epochs, "batchSize": draw(st.integers(1, 4096)), "seed": draw(st.integers(0, 2**31))},
        "resources": {
            "workers": draw(st.integers(1, 16)),
            "gpusPerWorker": draw(st.integers(0, 8)),
            "cpusPerWorker": draw(st.integers(1, 64)),
            "memory": draw(QUANTITIES),
        },
        "export": {"formats": draw(st.sampled_from([["onnx"], ["torchscript"], ["onnx", "torchscript"]]))},
    }
    if epochs > 1 and draw(st.booleans()):
        spec["training"]["earlyStopping"] = {
            "metric": draw(st.sampled_from(["val_loss", "val_accuracy", "val_mae"])),
            "patience": draw(st.integers(1, epochs - 1)),
            "minDelta": draw(st.floats(0, 0.01)),
        }
    if architecture in ("cnn", "resnet", "gan"):
        spec["regularization"] = {
            "augmentation": draw(
                st.lists(st.sampled_from(["hflip", "vflip", "crop", "rotate", "noise"]), unique=True, max_size=3)
            ),
            "l2": draw(st.floats(0, 0.01)),
        }
    return spec


@st.composite
def training_run(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(training_template())
    spec["suspend"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["ttlSecondsAfterFinished"] = draw(st.integers(0, 86400))
    return spec


@st.composite
def dataset_prep(draw: st.DrawFn) -> dict[str, Any]:
    train = draw(st.integers(5, 95))
    validation = draw(st.integers(0, 100 - train))
    split = {"train": train / 100, "validation": validation / 100, "test": (100 - train - validation) / 100}
    columns = st.sampled_from(["a", "b", "weight", "origin", "hp"])
    transforms = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda t, c: {"type": t, "columns": c},
                    st.sampled_from(["standardize", "minMax", "oneHot", "ordinal", "normalize", "log"]),
                    st.lists(columns, unique=True, max_size=3),
                ),
                st.builds(lambda h, w: {"type": "resize", "size": [h, w]}, st.integers(1, 512), st.integers(1, 512)),
            ),
            max_size=4,
        )
    )
    spec: dict[str, Any] = {
        "source": {
            "uri": draw(
                st.builds(lambda s, p: f"{s}://{p}", st.sampled_from(["s3", "https", "file", "builtin"]), NAMES)
            ),
            "format": draw(st.sampled_from(["csv", "parquet", "jsonl", "imagefolder", "idx"])),
        },
        "label": draw(columns),
        "cleaning": {
            "dropDuplicates": draw(st.booleans()),
            "missing": {
                "default": draw(st.sampled_from(["drop", "mean", "median", "mode"])),
                "columns": draw(st.dictionaries(columns, st.sampled_from(["mean", "median", "mode", "drop"]))),
            },
        },
        "transforms": transforms,
        "split": split,
        "resources": {"workers": draw(st.integers(1, 8)), "memory": draw(QUANTITIES)},
    }
    if draw(st.booleans()):
        spec["sample"] = draw(
            st.one_of(
                st.builds(lambda r: {"rows": r}, st.integers(1, 10**7)),
                st.builds(lambda f: {"fraction": f}, st.floats(0.01, 1.0)),
            )
        )
    return spec


PARAMETERS = {
    "optimizer.learningRate": st.builds(
        lambda lo, k: {"loguniform": [lo, lo * k]}, st.floats(1e-6, 1e-2), st.floats(1.5, 100)
    ),
    "optimizer.weightDecay": st.builds(
        lambda lo, w: {"uniform": [lo, lo + w]}, st.floats(0, 0.01), st.floats(0.001, 0.1)
    ),
    "training.batchSize": st.builds(
        lambda c: {"choice": c}, st.lists(st.sampled_from([16, 32, 64, 128]), min_size=1, unique=True)
    ),
    "model.params.dropout": st.builds(lambda g: {"grid": g}, st.lists(st.floats(0, 0.5), min_size=1, max_size=4)),
    "model.params.layers": st.builds(lambda lo, w: {"randint": [lo, lo + w]}, st.integers(1, 4), st.integers(1, 4)),
}


@st.composite
def tuning_sweep(draw: st.DrawFn) -> dict[str, Any]:
    template = draw(training_template())
    template["training"]["epochs"] = draw(st.integers(3, 50))
    template["training"].pop("earlyStopping", None)
    keys = draw(st.lists(st.sampled_from(sorted(PARAMETERS)), min_size=1, unique=True))
    max_trials = draw(st.integers(1, 100))
    scheduler = draw(st.sampled_from(["fifo", "asha", "median"]))
    return {
        "template": template,
        "searchSpace": {k: draw(PARAMETERS[k]) for k in keys},
        "algorithm": draw(st.sampled_from(["random", "tpe"])),
        "scheduler": {
            "type": scheduler,
            "gracePeriod": draw(st.integers(1, 2)),
            "reductionFactor": draw(st.integers(2, 4)),
        },
        "objective": {
            "metric": draw(st.sampled_from(["val_accuracy", "val_loss"])),
            "direction": draw(st.sampled_from(["maximize", "minimize"])),
        },
        "maxTrials": max_trials,
        "parallelTrials": draw(st.integers(1, max_trials)),
        "maxFailedTrials": draw(st.integers(0, 5)),
    }


@st.composite
def model_deployment(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(0, 5))
    spec: dict[str, Any] = {
        "model": draw(
            st.one_of(
                st.builds(lambda n: {"fromTrainingRun": n}, NAMES),
                st.builds(lambda n: {"fromTuningSweep": n}, NAMES),
                st.builds(lambda u: {"uri": u}, S3_OR_FILE),
            )
        ),
        "replicas": {"min": low, "max": low + draw(st.integers(1, 5))},
        "resources": {"cpu": draw(QUANTITIES), "memory": draw(QUANTITIES), "gpus": draw(st.integers(0, 2))},
        "server": {
            "format": draw(st.sampled_from(["onnx", "torchscript"])),
            "batching": {"maxBatchSize": draw(st.integers(1, 512)), "maxLatencyMs": draw(st.floats(0, 100))},
        },
        "monitoring": {
            "drift": {
                "enabled": draw(st.booleans()),
                "method": draw(st.sampled_from(["psi", "ks"])),
                "threshold": draw(st.floats(0.01, 1.0)),
                "windowSize": draw(st.integers(10, 10000)),
            }
        },
    }
    if draw(st.booleans()):
        steps = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=10)))
        spec["rollout"] = {
            "strategy": "canary",
            "canary": {"steps": steps, "intervalSeconds": draw(st.integers(1, 600))},
        }
    if draw(st.booleans()):
        spec["autoUpdate"] = {"enabled": True, "selector": {"matchLabels": {"app": draw(NAMES)}}}
    return spec


STRATEGIES = {
    "DatasetPrep": dataset_prep(),
    "TrainingRun": training_run(),
    "TuningSweep": tuning_sweep(),
    "ModelDeployment": model_deployment(),
}


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_valid_specs_round_trip_and_are_accepted(kind: str, slipway_crds: testbed.ControlPlane) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(spec=STRATEGIES[kind])
    def check(spec: dict[str, Any]) -> None:
        manifest = {
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "prop", "namespace": "default"},
            "spec": spec,
        }
        model = BY_KIND[kind].spec.model_validate(spec)
        dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert BY_KIND[kind].spec.model_validate(dumped) == model
        validate_manifest(manifest)
        stored = json.loads(
            slipway_crds.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(manifest))
        )
        assert stored["spec"] == dumped

    check()
