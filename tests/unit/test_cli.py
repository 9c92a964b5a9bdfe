"""The `slipway` and `python -m slipway_trainer` entry points a newcomer meets first."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

import slipway_operator

SLIPWAY = Path(sys.executable).parent / "slipway"


def test_slipway_version_is_the_package_version() -> None:
    out = subprocess.run([str(SLIPWAY), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"slipway {slipway_operator.__version__}"


def test_doctor_reports_packages_and_datasets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert report["packages"]["torch"]
    assert report["packages"]["ray"].startswith("2.60")
    assert report["datasets"]["fashion-mnist"] == "/usr/share/datasets/fashion-mnist"
    assert result.returncode == 0, report["problems"]


def test_demo_prepares_data_trains_and_says_what_is_not_built_yet(tmp_path: Path) -> None:
    """The demo's path on the example journey, shrunk (a sample of the data, one epoch) to keep tests quick."""
    repo = Path(__file__).resolve().parents[2]
    journey = tmp_path / "journey"
    journey.mkdir()
    for path in sorted((repo / "examples" / "fashion-mnist").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] == "DatasetPrep":
            doc["spec"]["sample"] = {"rows": 3000}
        if doc["kind"] == "TrainingRun":
            doc["spec"]["training"] = {"epochs": 1, "batchSize": 64}
            doc["spec"]["model"]["params"] = {"channels": [8, 16], "hidden": 32}
        (journey / path.name).write_text(yaml.safe_dump(doc))
    store = tmp_path / "store"
    result = subprocess.run(
        [str(SLIPWAY), "demo", "--manifests", str(journey), "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=repo,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Not run by this demo: tuning (the TuningSweep workload exists" in result.stdout
    assert "5. Serve 'fashion-cnn' over the Open Inference Protocol v2" in result.stdout
    assert re.search(r"\d+/10 right", result.stdout), result.stdout
    assert "valid: TrainingRun/fashion-cnn" in result.stdout
    assert re.search(r"3,000 rows: train 2,\d{3}, validation \d{3}, test \d{3}", result.stdout), result.stdout
    assert "1 epochs in" in result.stdout and "test_accuracy=" in result.stdout
    card = store / "runs" / "fashion-cnn" / "model" / "model_card.md"
    assert "## Test metrics" in card.read_text()
    result_json = json.loads((store / "runs" / "fashion-cnn" / "result.json").read_text())
    assert result_json["lineage"]["trainingRun"] == "fashion-cnn"


def test_unknown_command_names_the_choices() -> None:
    result = subprocess.run([str(SLIPWAY), "launch"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr
