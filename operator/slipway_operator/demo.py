"""`make demo`: the Fashion-MNIST journey on this machine, as far as Slipway goes today.

It runs the workloads as `python -m slipway_trainer <step>` processes, as the local backend will.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.workloads import prep_config, train_config

# What `make demo` runs today. Each later step of the journey joins it when it lands.
NOT_RUN = (
    "tuning (the TuningSweep workload exists, `python -m slipway_trainer tune`, but the example's sweep takes "
    "about 25 minutes on 2 cores)",
    "the ModelDeployment's rollout, monitoring and updates (they come with the operator)",
    "the operator (on a cluster, `slipway operator` drives DatasetPrep and TrainingRun so far) and `slipway run` "
    "(not built yet)",
)
DEMO_MANIFESTS = Path("examples/fashion-mnist")
DEMO_STORE = Path(".slipway")


def _step(title: str) -> None:
    print(f"\n== {title}")


def _run_workload(step: str, config: BaseModel, logs: Path, progress: Path | None = None) -> dict[str, Any] | None:
    """Run `python -m slipway_trainer <step>` with its log in `logs/`, showing `progress` (a progress.json)
    as a live line while it runs; its result, or None after saying why it failed and where the log is."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{step}-{getattr(config, 'name', step)}.log"
    config_file = logs / f"{step}-{getattr(config, 'name', step)}.config.json"
    config_file.write_text(config.model_dump_json(by_alias=True, indent=2))
    with log.open("w") as err:
        job = subprocess.Popen(
            [sys.executable, "-m", "slipway_trainer", step, "--config", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        out = ""
        try:
            while job.poll() is None:
                if progress is not None:
                    _show(progress)
                time.sleep(1)
            out = job.stdout.read() if job.stdout else ""
        except KeyboardInterrupt:
            job.terminate()
            job.wait()
            raise
    if progress is not None:
        print()
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        print(f"  {step} did not finish; its log: {log}")
        return None
    if result.get("status") != "Succeeded":
        print(f"  {step} failed ({result.get('reason')}): {result.get('message')}\n  its log: {log}")
        return None
    print(f"  log: {log}")
    return result


def _show(progress: Path) -> None:
    """One line, rewritten in place: epoch, a bar, the validation metrics, the ETA."""
    try:
        state = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError):
        return
    epoch, total = state.get("epoch"), state.get("totalEpochs")
    if not epoch or not total:
        print(f"\r  {state.get('phase', 'starting')}...", end="", flush=True)
        return
    done = int(20 * epoch / total)
    metrics = state.get("metrics", {})
    shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k in ("val_loss", "val_accuracy", "val_mae"))
    eta = state.get("etaSeconds")
    print(
        f"\r  [{'#' * done}{'.' * (20 - done)}] epoch {epoch}/{total} {shown} "
        f"{f'ETA {eta:.0f} s' if eta is not None else ''} ({state.get('phase', '')})   ",
        end="",
        flush=True,
    )


def demo(manifests: Path, store: Path) -> int:
    """Run the part of the journey that exists, and say plainly what does not yet."""
    print("Slipway demo: the journey on this machine, no cluster needed.")
    print("Not run by this demo: " + "; ".join(NOT_RUN) + ".")

    _step("1. This machine (python -m slipway_trainer doctor)")
    if subprocess.call([sys.executable, "-m", "slipway_trainer", "doctor"]) != 0:
        print("Fix the problems above, then run `make demo` again.")
        return 1

    _step(f"2. Validate the manifests in {manifests}/ (the same rules as the API server)")
    files = sorted(manifests.glob("*.yaml"))
    if not files:
        print(f"error: no manifests in {manifests}/: run `make demo` from the repository root", file=sys.stderr)
        return 1
    preps: list[tuple[str, DatasetPrepSpec]] = []
    runs: list[tuple[str, TrainingRunSpec]] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            try:
                spec = validate_manifest(doc)
            except InvalidManifest as err:
                print(f"{path}: {err}")
                return 1
            print(f"  valid: {doc['kind']}/{doc['metadata']['name']} ({path.name})")
            if isinstance(spec, DatasetPrepSpec):
                preps.append((doc["metadata"]["name"], spec))
            elif isinstance(spec, TrainingRunSpec):
                runs.append((doc["metadata"]["name"], spec))

    datasets: dict[str, str] = {}
    for name, spec in preps:
        _step(f"3. Prepare the dataset {name!r} (python -m slipway_trainer prep)")
        output = (store / "datasets" / name).resolve()
        result = _run_workload("prep", prep_config(name, spec, output.as_uri()), store / "logs")
        if result is None:
            return 1
        rows = result["rows"]
        print(
            f"  {rows['total']:,} rows: train {rows['train']:,}, validation {rows['validation']:,}, "
            f"test {rows['test']:,}; dropped {result['droppedRows'] or 'none'}"
        )
        print(f"  task {result['task']}, fingerprint {result['fingerprint'][:19]}...")
        print(f"  manifest and data profile: {output / 'manifest.json'}")
        datasets[name] = output.as_uri()

    for name, spec in runs:
        ref = spec.dataset.ref
        if ref not in datasets:
            print(f"  {name}: its dataset {ref!r} is not among the manifests; skipped")
            continue
        _step(f"4. Train {name!r} on Ray Train, evaluate on the test split, export (python -m slipway_trainer train)")
        print(
            f"  {spec.model.architecture}, {spec.training.epochs} epochs on this machine's CPUs; progress in "
            f"{(store / 'runs' / name / 'progress.json').resolve()}"
        )
        artifacts = (store / "runs" / name).resolve()
        config = train_config(
            name,
            spec,
            datasets[ref],
            artifacts.as_uri(),
            workers=1,
            gpus_per_worker=0,
            cpus_per_worker=min(spec.resources.cpus_per_worker, os.cpu_count() or 1),
            lineage={"trainingRun": name, "datasetRef": ref},
        )
        result = _run_workload("train", config, store / "logs", artifacts / "progress.json")
        if result is None:
            return 1
        shown = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items() if k.count("_") == 1)
        print(f"  {result['epochs']} epochs in {result['trainSeconds']:.0f} s; test: {shown}")
        print(f"  model card: {artifacts / 'model' / 'model_card.md'}")
        print(f"  plots: {artifacts / 'report'}/, TensorBoard: tensorboard --logdir {artifacts / 'tensorboard'}")
        _step(f"5. Serve {name!r} over the Open Inference Protocol v2 and ask it about test images")
        if not _serve_and_ask(name, artifacts / "model", Path(datasets[ref].removeprefix("file://"))):
            return 1
    print("\nDone with what exists. `slipway run` and the rest of the operator land with their issues.")
    return 0


def _serve_and_ask(name: str, model: Path, dataset: Path, count: int = 10) -> bool:
    """Start the inference server on a free loopback port, send test images, print predictions and truth."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as scratch:
        ready = Path(scratch) / "ready.json"
        config = Path(scratch) / "serve.json"
        config.write_text(
            json.dumps({"modelUri": model.as_uri(), "modelName": name, "port": 0, "readyFile": str(ready)})
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "slipway_trainer", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    print("  the server did not start")
                    return False
                time.sleep(0.1)
            url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}/v2/models/{name}/infer"
            print(f"  serving at {url}")
            manifest = json.loads((dataset / "manifest.json").read_text())
            test = pq.read_table(dataset / manifest["splits"]["test"]).slice(0, count)
            images = test.column("image").to_pylist()
            h, w = manifest["images"]["height"], manifest["images"]["width"]
            body = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [count, h, w],
                        "datatype": "UINT8",
                        "data": [list(image) for image in images],
                    }
                ]
            }
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                outputs = {o["name"]: o for o in json.loads(answer.read())["outputs"]}
            names = manifest.get("classNames") or [str(c) for c in manifest["classes"]]
            truth = [names[manifest["classes"].index(v)] for v in test.column(manifest["label"]).to_pylist()]
            predicted = outputs.get("class_name", outputs["label"])["data"]
            probabilities = outputs["probabilities"]["data"]
            classes = len(manifest["classes"])
            right = 0
            for i, (guess, actual) in enumerate(zip(predicted, truth, strict=True)):
                confidence = max(probabilities[i * classes : (i + 1) * classes])
                right += guess == actual
                mark = "ok " if guess == actual else "   "
                print(f"  {mark} predicted {guess!s:<12} ({confidence:.2f})  truth {actual}")
            print(f"  {right}/{count} right; metrics at {url.rsplit('/v2/', 1)[0]}/metrics while it runs")
            return True
        finally:
            server.terminate()
            server.wait(timeout=60)
