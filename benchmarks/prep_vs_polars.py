"""Data preparation: Slipway's streaming pipeline against the same pipeline written in polars and in pandas.

Each cleans (duplicates, missing labels), imputes (median / mode fitted on train), splits 80/10/10 stratified
by the label with a fixed seed, fits standardization and one-hot encoding on the train split, and writes
Parquet per split, from the same generated Parquet file of mixed-type rows. Each runs in a child process of
its own, imports included, so its peak memory (max RSS) is its own. Prints rows/s and peak memory of each,
and Slipway's ratios to each. polars is the peer a user would pick today (its streaming engine); pandas the
one most already know.

    python benchmarks/prep_vs_polars.py [--rows 1000000] [--out benchmarks/.out]

Slipway runs as a DatasetPrep does: its workload entry point (`python -m slipway_trainer prep --config FILE`),
with the process settings that entry point makes and the run's result.json and log written as in a cluster.

Differences, stated: polars and pandas write the transformed feature matrix; Slipway writes the cleaned rows
and the fitted transform spec (applied when the data is loaded for training or serving), and also computes
the data profile, the class balance and the content fingerprint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / ".out"
NUMERIC = ["num_a", "num_b", "num_c"]
CATEGORICAL = ["cat_a", "cat_b"]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    unique = int(rows * 0.98)
    num_a = rng.normal(50, 10, unique)
    num_a[rng.random(unique) < 0.05] = np.nan
    cats = np.array([f"c{i:02d}" for i in range(20)], dtype=object)
    cat_a = cats[rng.integers(0, 20, unique)]
    cat_a[rng.random(unique) < 0.02] = None
    table = pa.table(
        {
            "num_a": num_a,
            "num_b": rng.integers(0, 1000, unique),
            "num_c": rng.lognormal(3, 1, unique),
            "cat_a": pa.array(cat_a, pa.string()),
            "cat_b": pa.array(
                np.array(["red", "green", "blue", "black", "white"], dtype=object)[rng.integers(0, 5, unique)]
            ),
            "label": rng.integers(0, 2, unique),
        }
    )
    duplicates = table.take(rng.integers(0, unique, rows - unique))
    combined = pa.concat_tables([table, duplicates])
    order = rng.permutation(rows)
    pq.write_table(combined.take(order), path, row_group_size=65536)


def run_pandas(source: Path, out: Path) -> None:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_parquet(source)
    frame = frame.drop_duplicates().dropna(subset=["label"])
    train, rest = train_test_split(frame, train_size=0.8, stratify=frame["label"], random_state=42)
    validation, test = train_test_split(rest, train_size=0.5, stratify=rest["label"], random_state=42)
    median = train["num_a"].median()
    mode = train["cat_a"].mode().iloc[0]
    means, stds = train[NUMERIC].mean(), train[NUMERIC].std()
    categories = {c: sorted(train[c].fillna(mode if c == "cat_a" else "").unique()) for c in CATEGORICAL}
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        part = split.copy()
        part["num_a"] = part["num_a"].fillna(median)
        part["cat_a"] = part["cat_a"].fillna(mode)
        part[NUMERIC] = (part[NUMERIC] - means) / stds
        for column in CATEGORICAL:
            part[column] = pd.Categorical(part[column], categories=categories[column])
        encoded = pd.get_dummies(part, columns=CATEGORICAL, dtype="float32")
        encoded.to_parquet(out / f"{name}.parquet")


def run_polars(source: Path, out: Path) -> None:
    import polars as pl

    frame = pl.scan_parquet(source).unique(maintain_order=True).drop_nulls("label")
    # A stratified 80/10/10 split: a seeded shuffle of each class's rows, cut at 80% and 90%.
    position = pl.int_range(pl.len()).shuffle(seed=42).over("label") / pl.len().over("label")
    frame = frame.with_columns(
        pl.when(position < 0.8).then(0).when(position < 0.9).then(1).otherwise(2).alias("_split")
    ).collect(engine="streaming")
    train = frame.filter(pl.col("_split") == 0)
    median = train["num_a"].fill_nan(None).median()
    mode = train["cat_a"].drop_nulls().mode().sort()[0]
    means = {c: train[c].mean() for c in NUMERIC}
    stds = {c: train[c].std() for c in NUMERIC}
    filled = {"cat_a": mode, "cat_b": ""}
    categories = {c: sorted(train[c].fill_null(filled[c]).unique().to_list()) for c in CATEGORICAL}
    out.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(("train", "validation", "test")):
        part = frame.filter(pl.col("_split") == index).drop("_split")
        part = part.with_columns(pl.col("num_a").fill_nan(None).fill_null(median), pl.col("cat_a").fill_null(mode))
        part = part.with_columns([(pl.col(c) - means[c]) / stds[c] for c in NUMERIC])
        part = part.with_columns(
            [(pl.col(c) == v).cast(pl.Float32).alias(f"{c}_{v}") for c in CATEGORICAL for v in categories[c]]
        ).drop(CATEGORICAL)
        part.write_parquet(out / f"{name}.parquet")


def run_slipway(source: Path, out: Path) -> None:
    """What a DatasetPrep runs: `python -m slipway_trainer prep --config FILE`, its entry point called here."""
    from slipway_trainer.__main__ import main as slipway_main

    config = out.parent / f"{out.name}-config.json"
    config.write_text(
        json.dumps(
            {
                "name": "bench",
                "outputUri": out.as_uri(),
                "spec": {
                    "source": {"uri": source.as_uri()},
                    "label": "label",
                    "cleaning": {"missing": {"default": "drop", "columns": {"num_a": "median", "cat_a": "mode"}}},
                    "transforms": [
                        {"type": "standardize", "columns": NUMERIC},
                        {"type": "oneHot", "columns": CATEGORICAL},
                    ],
                    "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "stratifyBy": "label", "seed": 42},
                },
            }
        )
    )
    with contextlib.redirect_stdout(sys.stderr):  # the workload prints its result; stdout carries the figures
        code = slipway_main(["prep", "--config", str(config)])
    written = out / "_run" / "result.json"
    if not written.exists():  # the config was refused before the run began: main printed why
        raise SystemExit(f"slipway prep refused its config (exit {code})")
    result = json.loads(written.read_text())
    if code != 0 or result["status"] != "Succeeded":
        raise SystemExit(f"slipway prep failed: {result.get('reason')}: {result.get('message')}")


ENGINES = {"polars": run_polars, "pandas": run_pandas, "slipway": run_slipway}


def child(engine: str, source: Path, rows: int, folder: Path) -> None:
    out = folder / f"{engine}-{rows}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ENGINES[engine](source, out)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": engine, "seconds": seconds, "rowsPerSecond": rows / seconds, "peakMiB": peak_mib}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=OUT, help="the folder for inputs and outputs (%(default)s)")
    parser.add_argument("--engine", choices=list(ENGINES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / f"mixed-{args.rows}.parquet"
    if args.engine:
        child(args.engine, source, args.rows, args.out)
        return 0
    if not source.exists():
        print(f"generating {args.rows:,} mixed-type rows (2% duplicates, missing values) ...")
        generate(source, args.rows)
    results = {}
    for engine in ENGINES:
        done = subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--out", str(args.out), "--engine", engine],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:  # its own words (a failed Slipway run says why), not a bare exit status
            raise SystemExit(f"the {engine} run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    slipway = results["slipway"]
    print(f"data prep on {args.rows:,} rows ({platform.machine()}, {platform.python_version()})")
    print(f"{'':10} {'rows/s':>12} {'seconds':>9} {'peak MiB':>9}")
    for name, r in results.items():
        print(f"{name:10} {r['rowsPerSecond']:12,.0f} {r['seconds']:9.2f} {r['peakMiB']:9.0f}")
    for peer in ("polars", "pandas"):
        print(
            f"ratio slipway/{peer}: throughput {slipway['rowsPerSecond'] / results[peer]['rowsPerSecond']:.2f}x, "
            f"peak memory {slipway['peakMiB'] / results[peer]['peakMiB']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
