"""Serving: Slipway's server (ONNX Runtime, dynamic batching) against a naive per-request server (FastAPI +
torch eager, no batching) on the same model, loaded by wrk on loopback at concurrency 1, 8 and 64.

Both take the same OIP v2 request (one Fashion-MNIST image as pixels) and apply the same transform spec; both
run with one process. Prints requests/s and p50/p99 latency of each, and the ratios.

    python benchmarks/serve_vs_naive.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / ".out"
CONCURRENCY = (1, 8, 64)


def train_model() -> tuple[Path, Path]:
    from slipway_trainer.config.prep import PrepConfig
    from slipway_trainer.config.train import TrainConfig
    from slipway_trainer.data import workload as prep
    from slipway_trainer.train import workload as train

    data, run = OUT / "serve-data", OUT / "serve-run"
    if not (run / "model" / "model.onnx").exists():
        shutil.rmtree(run, ignore_errors=True)
        prepared = prep.run(
            PrepConfig.model_validate(
                {
                    "outputUri": data.as_uri(),
                    "spec": {"source": {"uri": "builtin://fashion-mnist"}, "sample": {"rows": 5000}},
                }
            )
        )
        if prepared["status"] != "Succeeded":
            raise SystemExit(f"data prep failed: {prepared['message']}")
        result = train.run(
            TrainConfig.model_validate(
                {
                    "datasetUri": data.as_uri(),
                    "artifactUri": run.as_uri(),
                    "useRay": False,
                    "spec": {
                        "model": {"architecture": "cnn", "params": {"channels": [32, 64], "hidden": 128}},
                        "training": {"epochs": 1},
                    },
                }
            )
        )
        if result["status"] != "Succeeded":
            raise SystemExit(result["message"])
    return data, run


NAIVE = """
import json, sys, torch
from fastapi import FastAPI, Request
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.serve import protocol
from slipway_trainer.train.data import open_dataset
from slipway_trainer.train.workload import best_model
config = TrainConfig.model_validate_json(open(sys.argv[1]).read())
dataset = open_dataset(config.dataset_uri)
model = best_model(config, dataset)
torch.set_num_threads(1)
app = FastAPI()

@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    parsed = protocol.parse(await request.json(), dataset.transform, 1024)
    with torch.no_grad():
        out = model(torch.from_numpy(protocol.features(parsed, dataset.transform))).numpy()
    return protocol.response(parsed, out, dataset.transform, name, "1")
"""


START_SECONDS = 120.0  # the server's start (ONNX Runtime session, warm-up) on a loaded 2-core machine: ~5 s


def start_slipway(model: Path, grpc: bool = False) -> tuple[subprocess.Popen[bytes], int, int | None]:
    """The server on a free port (and a free gRPC port with `grpc`): (process, port, gRPC port)."""
    ready = OUT / "slipway.ready"
    ready.unlink(missing_ok=True)
    config = OUT / "slipway-serve.json"
    config.write_text(
        json.dumps(
            {
                "modelUri": (model / "model").as_uri(),
                "modelName": "bench",
                "port": 0,
                "readyFile": str(ready),
                "monitoring": {"drift": {"enabled": False}},
                "server": {"batching": {"maxBatchSize": 64, "maxLatencyMs": 2}},
                **({"grpcPort": 0} if grpc else {}),
            }
        )
    )
    log = OUT / "slipway-serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "slipway_trainer", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_SECONDS
    while not ready.exists():
        ended = process.poll() is not None
        if ended or time.monotonic() > deadline:
            process.kill()
            why = f"exited with code {process.returncode}" if ended else f"did not start within {START_SECONDS:.0f} s"
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise SystemExit(f"the Slipway server {why} (log {log}):\n{tail}")
        time.sleep(0.1)
    ports = json.loads(ready.read_text())
    return process, int(ports["port"]), ports.get("grpcPort")


def start_naive(run: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    from slipway_trainer.config.train import TrainConfig

    (OUT / "naive_app.py").write_text(NAIVE)
    config = OUT / "naive.json"
    config.write_text(
        TrainConfig.model_validate(
            {
                "datasetUri": data.as_uri(),
                "artifactUri": run.as_uri(),
                "spec": {"model": {"architecture": "cnn", "params": {"channels": [32, 64], "hidden": 128}}},
            }
        ).model_dump_json(by_alias=True)
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv=['x', {str(config)!r}]; sys.path.insert(0, {str(OUT)!r}); "
            f"import uvicorn, naive_app; uvicorn.run(naive_app.app, host='127.0.0.1', port={port}, log_level='error')",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the naive server did not start")


def answer(url: str, body: dict[str, Any]) -> None:
    """One request before the load: a server that refuses it (a non-2xx answer) stops the benchmark at once with
    its answer, instead of wrk timing refusals at every concurrency."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            return
    except urllib.error.HTTPError as err:
        text = err.read()[:1000].decode(errors="replace")
        raise SystemExit(f"{url} refused the benchmark's request: HTTP {err.code}: {text}") from None
    except OSError as err:
        raise SystemExit(f"{url} did not answer the benchmark's request: {err}") from None


def wrk(url: str, concurrency: int, seconds: int, script: Path) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rate, "p50": latency("50"), "p99": latency("99"), "non2xx": float(errors.group(1) if errors else 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does it)")
    OUT.mkdir(exist_ok=True)
    data, run = train_model()
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 28, 28],
                "datatype": "UINT8",
                "data": [[(r * 28 + c) % 256 for c in range(28)] for r in range(28)],
            }
        ]
    }
    script = OUT / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    results: dict[str, dict[int, dict[str, float]]] = {"slipway": {}, "naive": {}}
    slipway, port, _ = start_slipway(run)
    url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
    try:
        answer(url, body)
        for c in CONCURRENCY:
            results["slipway"][c] = wrk(url, c, args.seconds, script)
    finally:
        slipway.terminate()
        slipway.wait()
    naive = start_naive(run, data, port)
    try:
        answer(url, body)
        for c in CONCURRENCY:
            results["naive"][c] = wrk(url, c, args.seconds, script)
    finally:
        naive.terminate()
        naive.wait()
    print(
        f"serving one Fashion-MNIST image per request, {args.seconds} s per point, "
        "wrk (2 threads; 1 at concurrency 1) on loopback"
    )
    print(f"{'concurrency':>11} {'server':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for c in CONCURRENCY:
        for name in ("naive", "slipway"):
            r = results[name][c]
            print(f"{c:>11} {name:>8} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['non2xx']:8.0f}")
        s, n = results["slipway"][c], results["naive"][c]
        print(
            f"{'':>11} ratio slipway/naive: req/s {s['rps'] / n['rps']:.2f}x, p50 {s['p50'] / n['p50']:.2f}x, "
            f"p99 {s['p99'] / n['p99']:.2f}x"
        )
    (OUT / "serve_vs_naive.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
