"""Export for serving: ONNX and TorchScript, each loaded back and checked against the trained model, the
transform spec beside them, and a model card (markdown and JSON)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slipway_trainer.workload import WorkloadError

# Exported outputs must match the trained model's on test samples within these (float32 arithmetic,
# different kernels): |exported - trained| <= ATOL + RTOL * |trained|.
ATOL = 1e-4
RTOL = 1e-3
CHECK_ROWS = 64


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
    traced.save(str(path))


def check(model: nn.Module, x: np.ndarray, path: Path, fmt: str) -> dict[str, Any]:
    """Load the exported file back and compare its outputs with the trained model's."""
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).float().numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        with torch.no_grad():
            got = loaded(torch.from_numpy(x)).float().numpy()
    difference = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    ok = bool(np.allclose(got, expected, atol=ATOL, rtol=RTOL))
    if not ok:
        raise WorkloadError(
            "ExportMismatch",
            f"the {fmt} export differs from the trained model by up to "
            f"{difference:.3g} on test samples (tolerance {ATOL} + {RTOL} x |value|)",
        )
    return {
        "file": path.name,
        "rows": int(x.shape[0]),
        "maxAbsDifference": difference,
        "atol": ATOL,
        "rtol": RTOL,
        "passed": ok,
    }


def export_all(model: nn.Module, x: np.ndarray, formats: list[str], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    sample = x[:CHECK_ROWS].astype(np.float32)
    example = torch.from_numpy(sample[:2])
    model = model.cpu().eval()
    results = {}
    for fmt in formats:
        path = folder / ("model.onnx" if fmt == "onnx" else "model.pt")
        (export_onnx if fmt == "onnx" else export_torchscript)(model, example, path)
        results[fmt] = check(model, sample, path, fmt)
    return results


def model_card(info: dict[str, Any]) -> str:
    """The markdown model card, from the same facts as model_card.json."""
    metrics = info.get("metrics", {})
    exported = ", ".join(
        f"{fmt} (checked, max difference {check['maxAbsDifference']:.2g})" for fmt, check in info["exports"].items()
    )
    lines = [
        f"# Model card: {info['name']}",
        "",
        f"- **Task**: {info['task']} of `{info['label']}`"
        + (f" ({len(info.get('classes', []))} classes)" if info.get("classes") else ""),
        f"- **Architecture**: {info['architecture']} {json.dumps(info.get('params', {}))}, "
        f"{info['summary']['parameters']:,} parameters",
        f"- **Trained**: {info['epochs']} epochs (best epoch {info.get('bestEpoch')}), {info['trainedAt']}",
        f"- **Data**: `{info['dataset']['uri']}` version {info['dataset']['version']}, fingerprint "
        f"`{info['dataset']['fingerprint']}`; {info['dataset']['rows']}",
        f"- **Exports**: {exported}",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, int | float)]
    if info.get("fairness"):
        lines += ["", "## Fairness (test split)", ""]
        for feature, report in info["fairness"].items():
            if "groups" not in report:
                lines.append(f"- {feature}: {report.get('error')}")
                continue
            groups = ", ".join(f"{g}: {v[report['metric']]} ({v['rows']} rows)" for g, v in report["groups"].items())
            lines.append(f"- **{feature}** ({report['metric']}): {groups}; largest gap {report['largest_gap']}")
    if info.get("importance"):
        top = list(info["importance"].items())[:10]
        lines += ["", "## What the model relies on (permutation importance)", ""]
        lines += [f"- {name}: {value}" for name, value in top]
    lines += [
        "",
        "## Intended use",
        "",
        info.get(
            "intendedUse",
            "Predictions on data drawn like the training data, through the transform spec shipped "
            "with the model (raw values in, the same cleaning and encoding applied).",
        ),
        "",
        "## Limitations",
        "",
        "- Evaluated only on a held-out split of the same source; performance on other populations is unknown.",
        "- Inputs outside the training data's range (see the data profile) may be predicted poorly; serving watches "
        "for drift against that profile.",
        "- Fairness figures cover only the declared sensitive features, on the test split's groups.",
        "",
        "## Model summary",
        "",
        "| layer | type | output shape | parameters |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['layer']} | {r['type']} | {r['outputShape']} | {r['parameters']:,} |" for r in info["summary"]["layers"]
    ]
    return "\n".join(lines) + "\n"
