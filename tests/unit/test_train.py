"""Training, evaluation and export on real (small) data with real torch, in this process (no Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from slipway_trainer.artifacts import HISTORY
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.data import workload as prep_workload
from slipway_trainer.train import evaluate, workload
from slipway_trainer.train.data import open_dataset
from specs import AUTO_MPG


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("datasets")
    specs = {
        "fashion": {
            "source": {"uri": "builtin://fashion-mnist"},
            "sample": {"rows": 1500, "seed": 1},
            "split": {"stratifyBy": "label"},
        },
        "mpg": AUTO_MPG,
        "cancer": {
            "source": {"uri": "builtin://sklearn/breast_cancer"},
            "transforms": [{"type": "standardize"}],
            "split": {"stratifyBy": "target"},
        },
        "wine": {  # 178 rows: a validation split of 27, where val_accuracy ties often
            "source": {"uri": "builtin://sklearn/wine"},
            "transforms": [{"type": "standardize"}],
            "split": {"stratifyBy": "target"},
        },
        "no-validation": {
            "source": {"uri": "builtin://sklearn/iris"},
            "split": {"train": 0.8, "validation": 0.0, "test": 0.2},
        },
    }
    uris = {}
    for name, spec in specs.items():
        uri = (root / name).as_uri()
        result = prep_workload.run(PrepConfig.model_validate({"name": name, "outputUri": uri, "spec": spec}))
        assert result["status"] == "Succeeded", result
        uris[name] = uri
    return uris


# `make gpu-check` sets SLIPWAY_TEST_GPUS=1 on a machine with a CUDA GPU: the same tests then train on it.
GPUS = int(os.environ.get("SLIPWAY_TEST_GPUS", "0"))


def train(tmp_path: Path, dataset: str, spec: dict[str, Any], name: str = "run", **extra: Any) -> dict[str, Any]:
    config = TrainConfig.model_validate(
        {
            "name": name,
            "datasetUri": dataset,
            "artifactUri": (tmp_path / name).as_uri(),
            "useRay": False,
            "gpusPerWorker": GPUS,
            "spec": spec,
            **extra,
        }
    )
    if GPUS:
        import torch

        assert torch.cuda.is_available(), "SLIPWAY_TEST_GPUS is set but torch sees no CUDA GPU"
        torch.cuda.reset_peak_memory_stats()
        result = workload.run(config)
        assert torch.cuda.max_memory_allocated() > 0, "the run did not use the GPU"
        return result
    return workload.run(config)


def first_test_images(dataset: str, count: int) -> np.ndarray:
    """The first `count` test images of a prepared image dataset, as the model sees them."""
    return open_dataset(dataset).load("test").x[:count].astype(np.float32)


TINY = {
    "mlp": {"hidden": [32]},
    "cnn": {"channels": [8, 16], "hidden": 32},
    "resnet": {"channels": [8, 16], "blocks": 1},
    "rnn": {"hidden": 32},
    "lstm": {"hidden": 32},
    "gru": {"hidden": 32},
    "transformer": {"dim": 32, "heads": 4, "layers": 1},
}


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_every_architecture_learns_fashion_and_exports_checked_models(
    architecture: str, datasets: dict[str, str], tmp_path: Path
) -> None:
    result = train(
        tmp_path,
        datasets["fashion"],
        {
            "model": {"architecture": architecture, "params": TINY[architecture]},
            # BatchNorm statistics of the small ResNet need a few more steps than 1,200 images give in 2 epochs.
            "training": {"epochs": 5 if architecture == "resnet" else 2, "batchSize": 64},
            "optimizer": {"name": "adam", "learningRate": 0.003},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    assert result["metrics"]["test_accuracy"] > 0.3  # ten classes: chance is 0.1
    for fmt in ("onnx", "torchscript"):
        assert result["exports"][fmt]["maxAbsDifference"] <= 1e-3
    model = tmp_path / "run" / "model"
    # Checked here too, apart from the workload's own check: both exports give the same outputs on real images.
    images = first_test_images(datasets["fashion"], 16)
    onnx_out = onnxruntime.InferenceSession(str(model / "model.onnx")).run(None, {"input": images})[0]
    torchscript_out = torch.jit.load(str(model / "model.pt"))(torch.from_numpy(images)).detach().numpy()
    assert onnx_out.shape == (16, 10) and np.allclose(onnx_out, torchscript_out, atol=1e-3, rtol=1e-3)
    card = json.loads((model / "model_card.json").read_text())
    assert card["summary"]["parameters"] > 0 and card["summary"]["layers"]
    assert card["lineage"]["datasetFingerprint"].startswith("sha256:")


def test_fashion_run_writes_progress_tensorboard_checkpoints_plots_and_a_model_card(
    datasets: dict[str, str], tmp_path: Path
) -> None:
    result = train(
        tmp_path,
        datasets["fashion"],
        {
            "model": {"architecture": "cnn", "params": TINY["cnn"]},
            "training": {"epochs": 3, "batchSize": 64},
            "regularization": {"augmentation": ["hflip", "crop", "rotate", "noise"], "l1": 1e-6, "l2": 1e-5},
            "optimizer": {
                "name": "sgd",
                "learningRate": 0.05,
                "momentum": 0.9,
                "schedule": {"type": "cosine", "warmupEpochs": 1},
            },
            "checkpoint": {"everyEpochs": 1, "keep": 2},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    run = tmp_path / "run"
    progress = json.loads((run / "progress.json").read_text())
    assert progress["epoch"] == 3 and progress["totalEpochs"] == 3 and "val_accuracy" in progress["metrics"]
    assert progress["samplesPerSecond"] > 0 and "etaSeconds" in progress
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "epoch-0002.pt", "epoch-0003.pt"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    for png in ("training_curves.png", "confusion_matrix.png", "saliency.png"):
        assert (run / "report" / png).stat().st_size > 5000
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    matrix = np.array(metrics["test"]["confusion_matrix"])
    test_rows = json.loads((Path(datasets["fashion"].removeprefix("file://")) / "manifest.json").read_text())["rows"]
    assert matrix.shape == (10, 10) and matrix.sum() == test_rows["test"]
    assert set(metrics["test"]["per_class"]) >= {"T-shirt/top", "Ankle boot"}
    card = (run / "model" / "model_card.md").read_text()
    assert "## Intended use" in card and "## Limitations" in card and "test_accuracy" in card
    # The exported ONNX model and its transform spec serve raw pixels the same way training saw them.
    transform = json.loads((run / "model" / "transform.json").read_text())
    assert transform["inputShape"] == [1, 28, 28]
    session = onnxruntime.InferenceSession(str(run / "model" / "model.onnx"))
    out = session.run(None, {"input": np.zeros((3, 1, 28, 28), dtype=np.float32)})[0]
    assert out.shape == (3, 10)


def test_auto_mpg_regression_beats_a_mean_predictor_by_a_wide_margin(datasets: dict[str, str], tmp_path: Path) -> None:
    result = train(
        tmp_path,
        datasets["mpg"],
        {
            "model": {"architecture": "mlp", "params": {"hidden": [64, 32], "dropout": 0.05}},
            "objective": {"loss": "huber", "metric": "mae", "direction": "minimize"},
            "optimizer": {"name": "adam", "learningRate": 0.01},
            "training": {"epochs": 80, "batchSize": 32, "earlyStopping": {"metric": "val_mae", "patience": 15}},
            "evaluation": {"sensitiveFeatures": ["Origin"]},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    metrics = result["metrics"]
    assert metrics["test_r2"] > 0.75
    assert metrics["test_mse"] < 0.3 * metrics["test_baseline_mse"]
    report = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    fairness = report["fairness"]["Origin"]
    assert set(fairness["groups"]) == {"USA", "Japan", "Europe"}
    per_group = [g["mae"] for g in fairness["groups"].values()]
    assert all(v > 0 for v in per_group) and fairness["largest_gap"] == pytest.approx(max(per_group) - min(per_group))
    test_rows = open_dataset(datasets["mpg"]).manifest.rows["test"]
    assert sum(g["rows"] for g in fairness["groups"].values()) == test_rows
    assert "Weight_in_lbs" in report["importance"] and "Origin" in report["importance"]
    assert "## Fairness (test split)" in (tmp_path / "run" / "model" / "model_card.md").read_text()


def test_binary_classification_with_bce_reports_roc_auc(datasets: dict[str, str], tmp_path: Path) -> None:
    result = train(
        tmp_path,
        datasets["cancer"],
        {
            "model": {"architecture": "mlp", "params": {"hidden": [16]}},
            "objective": {"loss": "bce", "metric": "accuracy"},
            "optimizer": {"name": "adam", "learningRate": 0.01},
            "training": {"epochs": 20, "batchSize": 32},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    assert result["metrics"]["test_roc_auc"] > 0.95
    assert result["metrics"]["test_accuracy"] > 0.9


def test_on_a_tie_in_val_accuracy_the_best_epoch_is_the_one_with_the_lower_val_loss_not_the_first(
    datasets: dict[str, str], tmp_path: Path
) -> None:
    result = train(
        tmp_path,
        datasets["wine"],
        {
            "model": {"architecture": "mlp", "params": {"hidden": [32]}},
            "objective": {"metric": "accuracy"},
            "optimizer": {"name": "adam", "learningRate": 0.01},
            "training": {"epochs": 12, "batchSize": 16, "earlyStopping": {"metric": "val_accuracy", "patience": 8}},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    history = json.loads((tmp_path / "run" / HISTORY).read_text())
    top = max(h["val_accuracy"] for h in history)
    tied = [h for h in history if h["val_accuracy"] == top]
    assert len(tied) >= 2, history  # the case this is about: the objective ties
    assert result["bestEpoch"] == min(tied, key=lambda h: h["val_loss"])["epoch"], (result["bestEpoch"], tied)
    assert result["metrics"]["test_accuracy"] > 0.9


def test_tabular_sequence_and_transformer_models_train_on_features(datasets: dict[str, str], tmp_path: Path) -> None:
    for architecture in ("gru", "transformer"):
        result = train(
            tmp_path,
            datasets["mpg"],
            {
                "model": {"architecture": architecture, "params": TINY[architecture]},
                "objective": {"loss": "mse", "metric": "mse", "direction": "minimize"},
                "training": {"epochs": 5, "batchSize": 32},
            },
            name=architecture,
        )
        assert result["status"] == "Succeeded", result.get("message")
        assert result["exports"]["onnx"]["passed"]


def test_gan_reports_losses_samples_and_exports_the_generator(datasets: dict[str, str], tmp_path: Path) -> None:
    result = train(
        tmp_path,
        datasets["fashion"],
        {
            "model": {"architecture": "gan", "params": {"latent": 16, "hidden": 64}},
            "optimizer": {"learningRate": 0.0002},
            "training": {"epochs": 2, "batchSize": 64},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    assert {"final_d_loss", "final_g_loss", "test_discriminator_accuracy"} <= set(result["metrics"])
    assert (tmp_path / "run" / "report" / "samples.png").stat().st_size > 5000
    session = onnxruntime.InferenceSession(str(tmp_path / "run" / "model" / "model.onnx"))
    images = session.run(None, {"input": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)})[0]
    assert images.shape == (4, 1, 28, 28) and images.min() >= 0 and images.max() <= 1


def train_command(tmp_path: Path, dataset: str, epochs: int, checkpoint: dict[str, Any]) -> list[str]:
    """`python -m slipway_trainer train` of a tiny CNN, as a pod runs it, with its artifacts under tmp_path/run."""
    config = tmp_path / "config.json"
    spec = {
        "model": {"architecture": "cnn", "params": TINY["cnn"]},
        "training": {"epochs": epochs, "batchSize": 32},
        "checkpoint": checkpoint,
    }
    run = {"datasetUri": dataset, "artifactUri": (tmp_path / "run").as_uri(), "useRay": False, "spec": spec}
    config.write_text(json.dumps(run))
    return [sys.executable, "-m", "slipway_trainer", "train", "--config", str(config)]


def test_a_killed_job_resumes_from_its_newest_checkpoint(datasets: dict[str, str], tmp_path: Path) -> None:
    """A fresh job on the same artifacts picks up where the killed one left its last checkpoint."""
    artifacts = tmp_path / "run"
    command = train_command(tmp_path, datasets["fashion"], 8, {"everyEpochs": 1, "keep": 10})
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (artifacts / "checkpoints" / "epoch-0002.pt").exists():
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    saved = sorted(int(p.stem.split("-")[1]) for p in (artifacts / "checkpoints").glob("epoch-*.pt"))
    reached = max(h["epoch"] for h in json.loads((artifacts / HISTORY).read_text()))
    assert saved and saved[-1] >= 2
    assert not (artifacts / "result.json").exists()  # killed mid-run: no result that looks complete
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "Succeeded", done.stderr[-2000:]
    assert result["resumedFrom"] == [saved[-1]]  # at most one checkpoint interval (one epoch) was lost
    assert result["epochsLost"] == reached - saved[-1]
    assert result["epochs"] == 8


def test_a_job_asked_to_stop_checkpoints_its_last_finished_epoch_and_resumes_after_it(
    datasets: dict[str, str], tmp_path: Path
) -> None:
    """What a preempted run's pod does (its preStop hook creates the stop file): a run that checkpoints only every
    100 epochs writes the epoch it had finished when asked to stop, disarms (the hook then lets the pod go) and
    waits to be killed; run again, it resumes after that epoch with no finished epoch lost."""
    artifacts, stop = tmp_path / "run", tmp_path / "stop"
    command = train_command(tmp_path, datasets["fashion"], 20, {"everyEpochs": 100})
    env = {**os.environ, "SLIPWAY_STOP_FILE": str(stop)}
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           env=env)  # fmt: skip
    try:
        history = artifacts / HISTORY
        wait_for(lambda: history.exists() and len(json.loads(history.read_text())) >= 2, "epoch 2", 240)
        armed = list(tmp_path.glob("stop.armed.*"))
        assert len(armed) == 1, armed  # the loop says it trains, so the hook waits for it
        stop.touch()
        wait_for(lambda: not armed[0].exists(), "the loop to disarm after its checkpoint", 120)
        assert job.poll() is None  # it waits to be killed, and trains no further
        reached = max(h["epoch"] for h in json.loads(history.read_text()))
        time.sleep(1)
        assert max(h["epoch"] for h in json.loads(history.read_text())) == reached
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    saved = sorted(int(p.stem.split("-")[1]) for p in (artifacts / "checkpoints").glob("epoch-*.pt"))
    assert saved == [reached], (saved, reached)
    assert not (artifacts / "result.json").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "Succeeded", done.stderr[-2000:]
    assert result["resumedFrom"] == [reached] and result["epochsLost"] == 0
    assert result["epochs"] == 20


def wait_for(done: Any, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


BAD = [
    (
        "cnn-on-tabular",
        "mpg",
        {"model": {"architecture": "cnn"}, "objective": {"loss": "mse", "metric": "mse", "direction": "minimize"}},
        "ModelDoesNotFitData",
        "cnn needs image data",
    ),
    (
        "classification-loss-on-regression",
        "mpg",
        {"model": {"architecture": "mlp"}},
        "LossDoesNotFitData",
        "loss cross_entropy is for classification",
    ),
    (
        "nan-loss",
        "mpg",
        {
            "model": {"architecture": "mlp", "params": {"hidden": [256, 256]}},
            "objective": {"loss": "mse", "metric": "mse", "direction": "minimize"},
            "optimizer": {"name": "sgd", "learningRate": 5.0, "momentum": 0.99},
            "training": {"epochs": 20},
        },
        "NaNLoss",
        "lower optimizer.learningRate",
    ),
    (
        "empty-validation-split",
        "no-validation",
        {"model": {"architecture": "mlp"}},
        "EmptySplit",
        "the validation split",
    ),
]


@pytest.mark.parametrize(("case", "dataset", "spec", "reason", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_clearly_without_a_model_that_looks_valid(
    datasets: dict[str, str], tmp_path: Path, case: str, dataset: str, spec: dict[str, Any], reason: str, message: str
) -> None:
    result = train(tmp_path, datasets[dataset], spec)
    assert result["status"] == "Failed"
    assert result["reason"] == reason, result
    assert message in result["message"], result["message"]
    assert not (tmp_path / "run" / "model").exists()


def test_a_dataset_that_is_not_prepared_yet_is_named(tmp_path: Path) -> None:
    result = train(tmp_path, (tmp_path / "nothing-here").as_uri(), {"model": {"architecture": "mlp"}})
    assert result["status"] == "Failed" and result["reason"] == "DatasetNotReady"
    assert "manifest.json does not exist" in result["message"]


def test_saliency_lights_up_the_pixels_that_decide_the_predicted_class() -> None:
    """A synthetic case built for it: 8x8 noise images whose class is which corner patch (top left or bottom
    right) is bright. A small network learns it; its saliency must sit on the patch of the class it predicts."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    images = rng.normal(0.0, 1.0, (600, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 2, 600)
    images[labels == 0, :, :2, :2] += 3.0
    images[labels == 1, :, 6:, 6:] += 3.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    heat, chosen = evaluate.saliency(model, images[:40])
    assert (chosen == labels[:40]).mean() > 0.95  # it learned the rule
    x = torch.from_numpy(images[:40]).requires_grad_(True)  # raw input gradients, what the report showed before
    model(x).gather(1, torch.from_numpy(chosen).view(-1, 1)).sum().backward()
    assert x.grad is not None
    raw = x.grad.abs().sum(1).numpy()
    patches = {0: (slice(0, 2), slice(0, 2)), 1: (slice(6, 8), slice(6, 8))}
    shares, raw_shares = [], []
    for h, g, c in zip(heat, raw, chosen, strict=True):
        own = np.zeros((8, 8), dtype=bool)
        own[patches[int(c)]] = True
        assert h[own].mean() > 3 * h[~own].mean()  # 4 of 64 pixels hold the evidence, and the map shows them
        shares.append(h[own].sum() / h.sum())
        raw_shares.append(g[own].sum() / g.sum())
    # Integrated Gradients puts most of the map on the 4 deciding pixels (1/16 of the image: 0.83 seen); the raw
    # gradient spreads more of it over the noise pixels (0.59 seen).
    ig, grad = float(np.mean(shares)), float(np.mean(raw_shares))
    assert ig > 0.7 and ig > grad + 0.15, (ig, grad)


def test_permutation_importance_ranks_the_one_informative_feature_first(tmp_path: Path) -> None:
    """Synthetic regression: the target is 3 x `signal` plus a little noise; `noise_a` and `noise_b` say nothing."""
    rng = np.random.default_rng(0)
    signal, noise_a, noise_b = rng.normal(size=(3, 400))
    target = 3 * signal + rng.normal(0.0, 0.1, 400)
    rows = ["signal,noise_a,noise_b,target"] + [
        f"{a:.5f},{b:.5f},{c:.5f},{t:.5f}" for a, b, c, t in zip(signal, noise_a, noise_b, target, strict=True)
    ]
    (tmp_path / "synthetic.csv").write_text("\n".join(rows) + "\n")
    dataset = (tmp_path / "prepared").as_uri()
    spec = {"source": {"uri": (tmp_path / "synthetic.csv").as_uri()}, "label": "target"}
    prepared = prep_workload.run(PrepConfig.model_validate({"name": "synthetic", "outputUri": dataset, "spec": spec}))
    assert prepared["status"] == "Succeeded", prepared
    result = train(
        tmp_path,
        dataset,
        {
            "model": {"architecture": "mlp", "params": {"hidden": [16]}},
            "objective": {"loss": "mse", "metric": "mae", "direction": "minimize"},
            "optimizer": {"name": "adam", "learningRate": 0.01},
            "training": {"epochs": 30, "batchSize": 32},
        },
    )
    assert result["status"] == "Succeeded", result.get("message")
    importance = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())["importance"]
    assert next(iter(importance)) == "signal"
    assert importance["signal"] > 1.0  # shuffling it costs more than one unit of mae (the target's sd is 3)
    assert importance["signal"] > 20 * max(abs(importance["noise_a"]), abs(importance["noise_b"]), 0.01)


def test_a_training_failure_from_a_worker_that_died_is_told_apart_from_an_error_in_the_loop() -> None:
    """Ray Train's own exception types, nested as Ray Train v2 raises them (a failure per worker rank)."""
    import ray.exceptions
    from ray.train.v2.api.exceptions import WorkerGroupError

    from slipway_trainer.train.ray_runner import _worker_died

    died = WorkerGroupError("rank 1 died", {1: ray.exceptions.ActorDiedError()})
    assert _worker_died(died)
    try:
        raise RuntimeError("Ray Train gave up") from ray.exceptions.NodeDiedError("node gone")
    except RuntimeError as err:
        assert _worker_died(err)
    assert not _worker_died(WorkerGroupError("a bug", {0: ValueError("shapes do not match")}))


def test_a_worker_killed_by_rays_memory_monitor_is_told_apart_as_out_of_memory() -> None:
    """Ray's memory monitor kills a worker that outgrows its pod's limit before the kernel does. Ray Train v2 raises
    it nested as below (a rank's failed health check holding Ray's OutOfMemoryError); its words name the memory
    used and the limit, which the run's OOMKilled message carries."""
    import ray.exceptions
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from slipway_trainer.train.ray_runner import _out_of_memory, _worker_died

    used = "Memory on the node (IP: 10.88.0.7, ID: 3f2a) was 1.43GB used / 1.46GB limit (0.951000)"
    words = f"1 worker(s) were killed due to the node running low on memory. {used}\nRay killed 1 worker(s)"
    check = WorkerHealthCheckFailedError("A worker health check failed.", ray.exceptions.OutOfMemoryError(words))
    died = WorkerGroupError("Training failed due to worker errors", {0: check})
    assert _out_of_memory(died) == used
    assert _worker_died(died)  # the same death, had it not been memory
    lost = WorkerHealthCheckFailedError("A worker health check failed.", ray.exceptions.ActorDiedError())
    assert _out_of_memory(WorkerGroupError("lost", {1: lost})) is None
