"""The operator never loads torch or ray; the workloads never load kopf or kubernetes.

Checked at run time in a fresh interpreter (every module of each package imported), beside the
static import-linter contracts in pyproject.toml that `make lint` enforces.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def loaded_top_level_modules(package: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("slipway_operator", {"torch", "ray"}),
        ("slipway_trainer", {"kopf", "kubernetes", "slipway_operator"}),
    ],
)
def test_package_does_not_load_the_other_side(package: str, forbidden: set[str]) -> None:
    loaded = loaded_top_level_modules(package)
    assert package in loaded
    assert not (loaded & forbidden), f"importing {package} loaded {sorted(loaded & forbidden)}"


def test_the_probe_would_notice_a_forbidden_import() -> None:
    # The check above is only worth something if it can fail: torch does load torch.
    assert "torch" in loaded_top_level_modules("torch.nn")


def test_the_inference_server_loads_only_what_its_image_installs() -> None:
    """The server image (images/server) has no pandas, torch or ray: what `serve` imports must not need them (a
    hashing helper imported from data/cleaning.py once pulled pandas in, and only the image build noticed)."""
    probe = (
        "import json, sys; import slipway_trainer.serve.workload; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert not (loaded & {"pandas", "torch", "ray"}), sorted(loaded & {"pandas", "torch", "ray"})
