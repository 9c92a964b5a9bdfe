"""From raw data to an exported model, wall clock: `slipway run --no-serve` on a DatasetPrep and a TrainingRun
against a hand-written script that does the same work with pandas/numpy and plain torch.

Both start as new processes (imports count), read the same raw data (vega_datasets' `cars`; Debian's
Fashion-MNIST idx files), impute/encode/scale or normalise, split, train the same network with the same
optimizer, batch size and number of epochs (no early stopping on either side), and write an ONNX model. Slipway
also profiles and fingerprints the data, evaluates on the test split (metrics, plots, fairness or saliency),
exports TorchScript too and writes a model card and a report: that is the product, and it is in its time.

Aims (issue 21): Auto MPG at most 3x the script's time plus 10 s; the Fashion-MNIST CNN (10 epochs) at most 1.5x.

    python benchmarks/journey_vs_torch.py [--cases mpg,fashion] [--fashion-rows 20000] [--epochs-mpg 150]
        [--epochs-fashion 10] [--out benchmarks/.out]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent / ".out"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AIMS = {"mpg": (3.0, 10.0), "fashion": (1.5, 0.0)}  # slipway <= factor * script + seconds

# The hand-written side: what a person would write for the same result. Run as `python -c BASELINE case epochs
# rows model_path`.
BASELINE = r"""
import sys, time
import numpy as np, torch
from torch import nn
case, epochs, rows, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
rng = np.random.default_rng(7)
if case == "mpg":
    from vega_datasets import data
    df = data.cars().drop(columns=["Name"]).drop_duplicates().dropna(subset=["Miles_per_Gallon"])
    df = df.assign(**{f"Origin_{o}": (df.Origin == o).astype("float32") for o in sorted(df.Origin.unique())})
    df = df.drop(columns=["Origin"]).reset_index(drop=True)
    order = rng.permutation(len(df)); n_train = int(0.7 * len(df))
    train = df.iloc[order[:n_train]]
    df["Horsepower"] = df.Horsepower.fillna(train.Horsepower.median())
    numeric = ["Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration", "Year"]
    df["Year"] = df.Year.astype("int64") if df.Year.dtype.kind in "iuf" else df.Year.astype("int64") // 10**9
    mean, std = df.loc[order[:n_train], numeric].mean(), df.loc[order[:n_train], numeric].std()
    df[numeric] = (df[numeric] - mean) / std
    x = df.drop(columns=["Miles_per_Gallon"]).to_numpy("float32"); y = df.Miles_per_Gallon.to_numpy("float32")
    x_train, y_train = torch.from_numpy(x[order[:n_train]]), torch.from_numpy(y[order[:n_train]])
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 32), nn.ReLU(),
                          nn.Dropout(0.1), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=0.0)
    loss_fn, batch, sample = nn.HuberLoss(), 32, torch.zeros(1, x.shape[1])
    target = lambda yb: yb.view(-1, 1)
else:
    import gzip
    def idx(name):
        raw = gzip.decompress(open(f"/usr/share/datasets/fashion-mnist/{name}", "rb").read())
        dims = raw[3]; shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    images = np.concatenate([idx("train-images-idx3-ubyte.gz"), idx("t10k-images-idx3-ubyte.gz")])
    labels = np.concatenate([idx("train-labels-idx1-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")]).astype("int64")
    pick = rng.choice(len(images), rows, replace=False)
    x = (images[pick].astype("float32") / 255.0)[:, None]; y = labels[pick]
    n_train = int(0.8 * rows)
    x_train, y_train = torch.from_numpy(x[:n_train]), torch.from_numpy(y[:n_train])
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.0001)
    loss_fn, batch, sample = nn.CrossEntropyLoss(), 128, torch.zeros(1, 1, 28, 28)
    target = lambda yb: yb
for epoch in range(epochs):
    model.train()
    perm = torch.randperm(len(x_train))
    for start in range(0, len(perm), batch):
        i = perm[start:start + batch]
        opt.zero_grad(); loss_fn(model(x_train[i]), target(y_train[i])).backward(); opt.step()
model.eval()
torch.onnx.export(model, (sample,), path, input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "batch"}})
print("exported", path)
"""


def manifests(case: str, epochs: int, rows: int, folder: Path) -> None:
    """The example's DatasetPrep and TrainingRun, with a fixed number of epochs (no early stopping), the ONNX
    format only, and (Fashion-MNIST) `rows` images."""
    source = EXAMPLES / ("auto-mpg" if case == "mpg" else "fashion-mnist")
    prep = yaml.safe_load((source / "01-datasetprep.yaml").read_text())
    run = yaml.safe_load((source / "02-trainingrun.yaml").read_text())
    if case == "fashion":
        prep["spec"]["sample"] = {"rows": rows, "seed": 0}
    run["spec"]["training"].pop("earlyStopping", None)
    run["spec"]["training"]["epochs"] = epochs
    run["spec"]["export"] = {"formats": ["onnx"]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "01-datasetprep.yaml").write_text(yaml.safe_dump(prep))
    (folder / "02-trainingrun.yaml").write_text(yaml.safe_dump(run))


def timed(argv: list[str], cwd: Path, log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{argv[0:3]} failed with exit code {code} (log {log}):\n{tail}")
    return seconds


def measure(case: str, epochs: int, rows: int, out: Path) -> dict[str, Any]:
    folder = out / f"journey-{case}"
    shutil.rmtree(folder, ignore_errors=True)
    manifests(case, epochs, rows, folder / "manifests")
    slipway = shutil.which("slipway", path=str(Path(sys.executable).parent)) or "slipway"
    ours = timed([slipway, "run", "-f", "manifests", "--no-serve"], folder, folder / "slipway.log")
    model = folder / "baseline.onnx"
    theirs = timed(
        [sys.executable, "-c", BASELINE, case, str(epochs), str(rows), str(model)], folder, folder / "baseline.log"
    )
    if not model.exists():
        raise SystemExit(f"the baseline script wrote no model ({folder / 'baseline.log'})")
    factor, seconds = AIMS[case]
    return {
        "case": case,
        "epochs": epochs,
        "rows": rows if case == "fashion" else None,
        "slipwaySeconds": round(ours, 1),
        "scriptSeconds": round(theirs, 1),
        "ratio": round(ours / theirs, 2),
        "aim": f"<= {factor}x script" + (f" + {seconds:.0f} s" if seconds else ""),
        "withinAim": ours <= factor * theirs + seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="mpg,fashion")
    parser.add_argument("--fashion-rows", type=int, default=20000)
    parser.add_argument("--epochs-mpg", type=int, default=150)
    parser.add_argument("--epochs-fashion", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = []
    for case in args.cases.split(","):
        epochs = args.epochs_mpg if case == "mpg" else args.epochs_fashion
        result = measure(case, epochs, args.fashion_rows, args.out)
        results.append(result)
        print(
            f"{case}: slipway run {result['slipwaySeconds']} s, hand-written script {result['scriptSeconds']} s "
            f"-> {result['ratio']}x (aim {result['aim']}: {'met' if result['withinAim'] else 'NOT met'})",
            flush=True,
        )
    report = {"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "results": results}
    (args.out / "journey_vs_torch.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
