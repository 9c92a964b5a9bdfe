"""The `slipway` command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from slipway_operator import __version__
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.workloads import prep_config, train_config

# What `make demo` runs today. Each later step of the journey joins it when it lands.
NOT_RUN = (
    "tuning (the TuningSweep workload exists, `python -m slipway_trainer tune`, but the example's sweep takes "
    "about 25 minutes on 2 cores)",
    "serving (ModelDeployment: not built yet)",
    "the operator and `slipway run` (not built yet)",
)
DEMO_MANIFESTS = Path("examples/fashion-mnist")
DEMO_STORE = Path(".slipway")


def _step(title: str) -> None:
    print(f"\n== {title}")


def _run_workload(step: str, config: BaseModel) -> dict[str, Any] | None:
    """Run `python -m slipway_trainer <step>`; its result, or None after saying why it failed."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        handle.write(config.model_dump_json(by_alias=True))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "slipway_trainer", step, "--config", handle.name], stdout=subprocess.PIPE, text=True
        )
    finally:
        Path(handle.name).unlink(missing_ok=True)
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"  {step} did not finish: {done.stdout[-2000:]}")
        return None
    if result.get("status") != "Succeeded":
        print(f"  {step} failed ({result.get('reason')}): {result.get('message')}")
        return None
    return result


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
        result = _run_workload("prep", prep_config(name, spec, output.as_uri()))
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
            lineage={"trainingRun": name, "datasetPrep": ref},
        )
        result = _run_workload("train", config)
        if result is None:
            return 1
        shown = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items() if k.count("_") == 1)
        print(f"  {result['epochs']} epochs in {result['trainSeconds']:.0f} s; test: {shown}")
        print(f"  model card: {artifacts / 'model' / 'model_card.md'}")
        print(f"  plots: {artifacts / 'report'}/, TensorBoard: tensorboard --logdir {artifacts / 'tensorboard'}")
    print("\nDone with what exists. Serving, the operator and `slipway run` land with their issues.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description="From raw data to a monitored inference service.")
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="run the main job on this machine (what exists so far)")
    demo_parser.add_argument("--manifests", type=Path, default=DEMO_MANIFESTS, help="folder of the journey")
    demo_parser.add_argument("--store", type=Path, default=DEMO_STORE, help="where artifacts go (default .slipway/)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.manifests, args.store)
    return 2


if __name__ == "__main__":
    sys.exit(main())
