"""The `slipway` and `python -m slipway_trainer` entry points a newcomer meets first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_demo_prepares_the_fashion_dataset_and_says_what_is_not_built_yet(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [str(SLIPWAY), "demo", "--store", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=repo
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Not built yet, so not run: training (TrainingRun)" in result.stdout
    assert "valid: TrainingRun/fashion-cnn" in result.stdout
    assert "70,000 rows: train 56,000, validation 7,000, test 7,000" in result.stdout
    manifest = json.loads((tmp_path / "datasets" / "fashion" / "manifest.json").read_text())
    assert manifest["rows"]["total"] == 70000


def test_unknown_command_names_the_choices() -> None:
    result = subprocess.run([str(SLIPWAY), "launch"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr
