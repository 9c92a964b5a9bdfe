"""``python -m slipway_trainer doctor``: what this machine can run, in a few lines."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import sys
from typing import Any

from slipway_trainer.datasets import FASHION_MNIST_DIR, fashion_mnist_missing

PACKAGES = ("torch", "ray", "pyarrow", "onnxruntime", "scikit-learn", "vega_datasets", "s3fs")


def check() -> dict[str, Any]:
    """Versions of the workload dependencies, accelerators and built-in datasets."""
    report: dict[str, Any] = {"python": platform.python_version(), "packages": {}, "problems": []}
    for name in PACKAGES:
        try:
            report["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            report["packages"][name] = None
            report["problems"].append(f"{name} is not installed: run `make venv` (pip install -e '.[trainer]')")
    if report["packages"].get("torch"):
        torch = importlib.import_module("torch")
        report["cuda"] = bool(torch.cuda.is_available())
        report["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    missing = fashion_mnist_missing()
    report["datasets"] = {"fashion-mnist": str(FASHION_MNIST_DIR) if not missing else None}
    if missing:
        report["problems"].append(
            f"Fashion-MNIST is missing from {FASHION_MNIST_DIR} ({', '.join(missing)}): "
            "run `make datasets` (installs Debian's dataset-fashion-mnist)"
        )
    return report


def main(as_json: bool = False) -> int:
    report = check()
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"python       {report['python']}")
        for name, version in report["packages"].items():
            print(f"{name:<12} {version or 'MISSING'}")
        if "cuda" in report:
            gpus = ", ".join(report["gpus"]) or "none (training runs on the CPU)"
            print(f"{'gpus':<12} {gpus}")
        for name, where in report["datasets"].items():
            print(f"{name:<12} {where or 'MISSING'}")
        for problem in report["problems"]:
            print(f"problem: {problem}")
    return 1 if report["problems"] else 0
