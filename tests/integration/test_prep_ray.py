"""With workers > 1, data preparation reads and cleans in parallel with Ray Data (real Ray, local cluster),
and gives the same dataset, bit for bit, as one worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run_prep(tmp_path: Path, name: str, workers: int, source: Path) -> dict[str, Any]:
    config = tmp_path / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "outputUri": (tmp_path / name).as_uri(),
                "workers": workers,
                "batchRows": 500,
                "spec": {
                    "source": {"uri": source.as_uri()},
                    "label": "y",
                    "cleaning": {"missing": {"default": "drop", "columns": {"a": "median"}}},
                    "split": {"stratifyBy": "y", "seed": 5},
                },
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "prep", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_two_ray_workers_give_the_same_dataset_as_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [f"{'' if i % 17 == 0 else round(float(rng.normal()), 4)},{'xyz'[i % 3]},{i},{i % 2}" for i in range(3000)]
    rows += rows[:40]  # duplicates, some in other files than their originals
    source = tmp_path / "csv"
    source.mkdir()
    for part in range(4):
        (source / f"part-{part}.csv").write_text("a,b,c,y\n" + "\n".join(rows[part::4]) + "\n")
    one = run_prep(tmp_path, "one", 1, source)
    two = run_prep(tmp_path, "two", 2, source)
    assert one["status"] == two["status"] == "Succeeded"
    assert two["droppedRows"] == one["droppedRows"] == {"duplicate": 40}
    assert two["fingerprint"] == one["fingerprint"]
    assert two["rows"] == one["rows"]
