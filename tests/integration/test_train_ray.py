"""Training under Ray Train (real Ray, a local cluster on loopback): DDP across two workers, and recovery
when a worker process dies mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data import workload as prep_workload


def ray_train_workers(title_prefix: str = "ray::RayTrainWorker") -> list[int]:
    """Pids of the Ray Train worker processes (or of other Ray tasks: their process title names them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith(title_prefix):
                found.append(int(entry.name))
    return sorted(found)


def prepare_fashion(tmp_path: Path, rows: int) -> str:
    dataset = (tmp_path / "fashion").as_uri()
    spec = {"source": {"uri": "builtin://fashion-mnist"}, "sample": {"rows": rows}, "split": {"stratifyBy": "label"}}
    prepared = prep_workload.run(PrepConfig.model_validate({"outputUri": dataset, "spec": spec}))
    assert prepared["status"] == "Succeeded"
    return dataset


def test_under_ray_the_gan_trains_in_a_ray_task_on_a_worker_not_in_the_driver(tmp_path: Path) -> None:
    """On KubeRay the driver is the head, which has no GPU: the GAN's loop must run where Ray places work."""
    dataset = prepare_fashion(tmp_path, 600)
    artifacts = tmp_path / "gan"
    config = tmp_path / "gan.json"
    spec = {"model": {"architecture": "gan", "params": {"latent": 8, "hidden": 32}},
            "optimizer": {"learningRate": 0.0002}, "training": {"epochs": 3, "batchSize": 64}}  # fmt: skip
    config.write_text(json.dumps({"name": "gan", "datasetUri": dataset, "artifactUri": artifacts.as_uri(),
                                  "useRay": True, "spec": spec}))  # fmt: skip
    job = subprocess.Popen([sys.executable, "-m", "slipway_trainer", "train", "--config", str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen: set[int] = set()
    while job.poll() is None:
        seen.update(ray_train_workers("ray::_gan_on_worker"))
        time.sleep(0.1)
    _, stderr = job.communicate()
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "Succeeded", stderr[-3000:]
    assert seen and job.pid not in seen, seen
    assert result["epochs"] == 3 and (artifacts / "model" / "model.onnx").exists()
    progress = json.loads((artifacts / "progress.json").read_text())
    assert progress["epoch"] == 3 and progress["startedAt"] <= progress["updatedAt"], progress


def test_a_killed_ray_worker_is_replaced_and_training_resumes_from_the_newest_checkpoint(tmp_path: Path) -> None:
    dataset = prepare_fashion(tmp_path, 2000)
    artifacts = tmp_path / "run"
    config = tmp_path / "train.json"
    config.write_text(
        json.dumps(
            {
                "name": "ddp",
                "datasetUri": dataset,
                "artifactUri": artifacts.as_uri(),
                "useRay": True,
                "workers": 2,
                "maxFailures": 2,
                "spec": {
                    "model": {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}},
                    "training": {"epochs": 6, "batchSize": 32},
                    "checkpoint": {"everyEpochs": 1, "keep": 10},
                },
            }
        )
    )
    job = subprocess.Popen(
        [sys.executable, "-m", "slipway_trainer", "train", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (artifacts / "checkpoints" / "epoch-0002.pt").exists():
        assert job.poll() is None, job.communicate()
        time.sleep(0.2)
    saved = max(int(p.stem.split("-")[1]) for p in (artifacts / "checkpoints").glob("epoch-*.pt"))
    workers = ray_train_workers()
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    _, stderr = job.communicate(timeout=600)
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "Succeeded", stderr[-3000:]
    assert result["epochs"] == 6
    # The worker group restarted from the newest checkpoint there was when the worker died (or a later one
    # written in the instant before): at most one checkpoint interval, one epoch, of work was lost.
    assert len(result["resumedFrom"]) == 1 and result["resumedFrom"][0] >= saved
    progress = json.loads((artifacts / "progress.json").read_text())
    assert progress["workers"] == 2
    assert result["metrics"]["test_accuracy"] > 0.5
