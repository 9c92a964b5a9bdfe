"""The benchmarks at a smoke size: each script runs end to end on this machine (its generated inputs and outputs in a
temporary folder) and prints its comparison, so a change that breaks one shows here instead of at the next
`make bench`. No figure is asserted: only that the ratio line is printed, with numbers in it. A benchmark whose
subject refuses the work stops at once, saying why.

Left out: serve_vs_naive.py and serve_vs_kserve.py (their load comes from wrk and ghz, and KServe runs in a virtual
environment of its own, all installed by scripts/install-bench-tools.sh for `make bench` only), and
operator_scale.py's `--in-pod` (a second real node cannot run beside the session's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(?:\.\d+)?"


def bench(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def succeeded(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_prep_against_polars_and_pandas_prints_the_rates_and_the_ratios(tmp_path: Path) -> None:
    """Generated rows through the polars and pandas pipelines and Slipway's workload, each in its own process."""
    out = succeeded(bench("prep_vs_polars.py", "--rows", "2000", "--out", str(tmp_path)))
    for engine in ("polars", "pandas", "slipway"):
        assert re.search(rf"^{engine} +{NUMBER}", out.replace(",", ""), re.M), out
        assert (tmp_path / f"{engine}-2000" / "train.parquet").is_file() or engine == "slipway", out
    for peer in ("polars", "pandas"):
        assert re.search(rf"ratio slipway/{peer}: throughput {NUMBER}x, peak memory {NUMBER}x", out), out
    assert (tmp_path / "slipway-2000" / "manifest.json").is_file()


def test_training_against_plain_torch_prints_the_overhead_ratio(tmp_path: Path) -> None:
    """Two epochs (the first is the warm-up the mean leaves out) of the plain loop and of Slipway's under Ray Train."""
    out = succeeded(bench("train_vs_torch.py", "--rows", "1000", "--epochs", "2", "--out", str(tmp_path)))
    assert re.search(rf"overhead ratio plain/slipway: {NUMBER}", out), out
    assert (tmp_path / "train_vs_torch_cpu.json").exists()


def test_asha_against_fifo_prints_the_ratios(tmp_path: Path) -> None:
    """Two trials of two epochs under each scheduler, each sweep the real `slipway_trainer tune`."""
    out = succeeded(bench("tune_asha_vs_fifo.py", "--trials", "2", "--epochs", "2", "--out", str(tmp_path)))
    assert re.search(
        rf"ratio asha/fifo: best metric {NUMBER}, trial-epochs {NUMBER}, wall time {NUMBER}, searching {NUMBER}", out
    ), out


def test_a_sweep_that_refuses_its_config_stops_the_benchmark_with_the_reason(tmp_path: Path) -> None:
    """`--trials 0` is a sweep config the tuner refuses: the benchmark ends with its words, not a missing file."""
    done = bench("tune_asha_vs_fifo.py", "--trials", "0", "--out", str(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "fifo sweep left no result" in done.stderr and "maxTrials" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_the_journey_against_a_hand_written_script_prints_each_ratio(tmp_path: Path) -> None:
    """`slipway run --no-serve` on a DatasetPrep and a TrainingRun against the script a person would write, for
    Auto MPG (two epochs) and Fashion-MNIST (500 images, one epoch): both write a model."""
    out = succeeded(
        bench(
            "journey_vs_torch.py", "--epochs-mpg", "2", "--epochs-fashion", "1", "--fashion-rows", "500",
            "--out", str(tmp_path),
        )
    )  # fmt: skip
    for case in ("mpg", "fashion"):
        assert re.search(rf"^{case}: slipway run {NUMBER} s, hand-written script {NUMBER} s -> {NUMBER}x", out, re.M), (
            out
        )
        assert (tmp_path / f"journey-{case}" / "baseline.onnx").exists()
        assert list((tmp_path / f"journey-{case}").glob(".slipway/artifacts/runs/*/*/model/model.onnx")), case


def test_a_journey_that_slipway_refuses_stops_the_benchmark_with_the_reason(tmp_path: Path) -> None:
    """Zero epochs is a TrainingRun `slipway run` refuses: the benchmark stops with its words at once."""
    done = bench("journey_vs_torch.py", "--cases", "mpg", "--epochs-mpg", "0", "--out", str(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "epochs" in done.stderr and "failed with exit code" in done.stderr, done.stderr[-3000:]


def test_the_operator_at_scale_prints_its_times_and_requests_per_run_beside_the_plain_client(tmp_path: Path) -> None:
    """Five TrainingRuns on a control plane of the benchmark's own (the test bed's binaries), the operator a process
    of this machine: every row of the comparison is printed with its ratio, and the runs waited without an error."""
    args = ("--runs", "5", "--steady", "2", "--background", "0", "--timeout", "120", "--out", str(tmp_path))
    out = succeeded(bench("operator_scale.py", *args, timeout=600))
    for row in ("seconds until all 5 RayJobs exist", "peak RSS MiB", "API requests per TrainingRun"):
        assert re.search(rf"^{re.escape(row)}.* {NUMBER} +{NUMBER} +{NUMBER}x$", out, re.M), out
    assert re.search(r"^TrainingRun phases at the end: \{'Pending': 5\}$", out, re.M), out
    assert (tmp_path / "operator_scale.json").is_file() and (tmp_path / "operator-scale" / "operator.log").is_file()


def test_runs_the_operator_refuses_stop_the_operator_benchmark_at_once_with_the_reason(tmp_path: Path) -> None:
    """An operator that may not take the runs' file:// dataset makes every run Invalid: the benchmark ends within
    seconds of it, naming the run and the operator's words, instead of waiting out its timeout."""
    args = ("--runs", "3", "--steady", "0", "--background", "0", "--timeout", "600", "--refuse-file-uris")
    done = bench("operator_scale.py", *args, "--out", str(tmp_path), timeout=400)
    assert done.returncode != 0
    assert re.search(r"operator: 0/3 RayJobs after \d+\.\d s, and TrainingRun bench-operator/run-00\d is Invalid: "
                     r"spec\.dataset\.uri: a file:// URI", done.stderr), done.stderr[-3000:]  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
