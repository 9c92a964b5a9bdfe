"""The `slipway` and `python -m slipway_trainer` entry points a newcomer meets first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_unknown_command_names_the_choices() -> None:
    result = subprocess.run([str(SLIPWAY), "launch"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr


def test_operator_flags_become_the_settings_the_operator_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from slipway_operator import cli
    from slipway_operator.controllers.common import Settings

    seen: dict[str, object] = {}

    def capture(namespaces: list[str], environment: dict[str, str | None], json_logs: bool = False) -> int:
        seen.update(namespaces=namespaces, environment=environment)
        return 0

    monkeypatch.setattr(cli, "run_operator", capture)
    argv = ["operator", "--namespace", "ml", "--image", "t:1", "--server-image", "s:1", "--allow-file-uris"]
    assert cli.main(argv) == 0
    assert seen["namespaces"] == ["ml"]
    environment = seen["environment"]
    assert isinstance(environment, dict)
    settings = Settings.from_env({k: v for k, v in environment.items() if v})
    assert settings.allow_file_uris and settings.image == "t:1" and settings.serving_image("onnx") == "s:1"
    assert cli.main(["operator"]) == 0
    environment = seen["environment"]
    assert isinstance(environment, dict)
    assert not Settings.from_env({k: v for k, v in environment.items() if v}).allow_file_uris
