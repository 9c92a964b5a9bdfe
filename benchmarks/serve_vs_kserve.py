"""Serving against the peer a user would pick: Slipway's server against KServe's own Python model server
(`kserve.ModelServer` with a custom `Model` running ONNX Runtime on the same exported model — what a KServe user
deploys for an ONNX model with Slipway's preprocessing), and the naive baseline (FastAPI + torch eager), on
loopback, one process each, one after the other.

REST: the same OIP v2 JSON request (one Fashion-MNIST image as UINT8 pixels) by wrk; gRPC: the same
`inference.GRPCInferenceService/ModelInfer` request (typed `uint_contents`) by ghz; concurrency 1, 8 and 64.
Prints req/s, p50 and p99 of each and Slipway's ratios to KServe (the naive server has no gRPC).

    python benchmarks/serve_vs_kserve.py [--seconds 8]

Needs `scripts/install-bench-tools.sh` (wrk from Debian, ghz from the Go module proxy, KServe and ONNX Runtime
in their own virtual environment under benchmarks/.out, since KServe pins its own FastAPI and protobuf).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_vs_naive import CONCURRENCY, OUT, answer, start_naive, start_slipway, train_model, wrk

KSERVE_PYTHON = OUT / "kserve-venv" / "bin" / "python"
GHZ = OUT / "bin" / "ghz"

KSERVE_APP = """
import json, sys, uuid
import numpy as np
import onnxruntime
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

folder, http_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
transform = json.load(open(f"{folder}/transform.json"))
names = transform["label"]["class_names"]


class Fashion(Model):
    def __init__(self, name):
        super().__init__(name)
        self.session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        pixels = payload.inputs[0].as_numpy().astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
        logits = self.session.run(None, {self.input: pixels})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        labels = probabilities.argmax(axis=1)
        outputs = [  # Slipway's answer: label, probabilities, class name
            InferOutput(name="label", shape=[len(labels)], datatype="INT64", data=labels.tolist()),
            InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32",
                        data=[round(float(v), 6) for v in probabilities.reshape(-1)]),
            InferOutput(name="class_name", shape=[len(labels)], datatype="BYTES", data=[names[i] for i in labels]),
        ]
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or uuid.uuid4().hex)


ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([Fashion("bench")])
"""

IMAGE = [[(r * 28 + c) % 256 for c in range(28)] for r in range(28)]


def protoset() -> Path:
    """Slipway's OIP v2 messages (the same field numbers as grpc_predict_v2.proto) with the service, as the
    FileDescriptorSet ghz reads."""
    from google.protobuf import descriptor_pb2

    from slipway_trainer.serve.grpc_v2 import MESSAGES

    file = descriptor_pb2.FileDescriptorProto()
    MESSAGES["ModelInferRequest"].DESCRIPTOR.file.CopyToProto(file)
    service = file.service.add(name="GRPCInferenceService")
    service.method.add(
        name="ModelInfer", input_type=".inference.ModelInferRequest", output_type=".inference.ModelInferResponse"
    )
    path = OUT / "grpc_predict_v2.protoset"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    return path


def ghz(address: str, concurrency: int, seconds: int, descriptors: Path) -> dict[str, float]:
    request = {
        "model_name": "bench",
        "inputs": [
            {
                "name": "input",
                "datatype": "UINT8",
                "shape": [1, 28, 28],
                "contents": {"uint_contents": [p for row in IMAGE for p in row]},
            }
        ],
    }
    done = subprocess.run(
        [str(GHZ), "--insecure", "--protoset", str(descriptors), "--call", "inference.GRPCInferenceService/ModelInfer",
         "-d", json.dumps(request), "-c", str(concurrency), "--connections", str(min(concurrency, 8)),
         "-z", f"{seconds}s", "-O", "json", address],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    # The calls in flight when the duration ends fail on ghz's side (cancelled, or "use of closed network
    # connection" as it closes its own connections): not the server's errors.
    ends = ("closed network connection", "Canceled")
    errors = sum(n for text, n in (report.get("errorDistribution") or {}).items() if not any(e in text for e in ends))
    return {
        "rps": float(report["rps"]),
        "p50": latency.get(50, float("nan")),
        "p99": latency.get(99, float("nan")),
        "errors": float(errors),
    }


def start_kserve(model: Path, http_port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    (OUT / "kserve_app.py").write_text(KSERVE_APP)
    process = subprocess.Popen(
        [str(KSERVE_PYTHON), str(OUT / "kserve_app.py"), str(model), str(http_port), str(grpc_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/bench/ready", timeout=1):
                return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the KServe model server did not start") from None
            time.sleep(0.1)
    raise SystemExit("the KServe model server did not get ready")


def measure(
    name: str, rest: str | None, grpc: str | None, seconds: int, script: Path, descriptors: Path
) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {"rest": {}, "grpc": {}}
    for c in CONCURRENCY:
        if rest:
            out["rest"][c] = wrk(rest, c, seconds, script)
        if grpc:
            out["grpc"][c] = ghz(grpc, c, seconds, descriptors)
        print(f"  {name} c={c} done", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    missing = [t for t, ok in (("wrk", shutil.which("wrk")), ("ghz", GHZ.exists()), ("kserve", KSERVE_PYTHON.exists()))
               if not ok]  # fmt: skip
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: run scripts/install-bench-tools.sh (make bench does)")
    OUT.mkdir(exist_ok=True)
    data, run = train_model()
    body = {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": IMAGE}]}
    script = OUT / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    descriptors = protoset()
    results: dict[str, Any] = {}
    slipway, port, grpc_port = start_slipway(run, grpc=True)  # the others reuse its free ports, one at a time
    starts: dict[str, Callable[[], subprocess.Popen[bytes]]] = {
        "slipway": lambda: slipway,
        "kserve": lambda: start_kserve(run / "model", port, int(grpc_port or 0)),
        "naive": lambda: start_naive(run, data, port),
    }
    for name, start in starts.items():
        process = start()
        try:
            grpc = f"127.0.0.1:{grpc_port}" if name != "naive" else None  # the naive server speaks REST only
            url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
            answer(url, body)  # a server that refuses the request stops the run here, saying why
            results[name] = measure(name, url, grpc, args.seconds, script, descriptors)
        finally:
            process.terminate()
            process.wait()
    print(f"one Fashion-MNIST image per request, {args.seconds} s per point on loopback (REST: wrk, gRPC: ghz)")
    print(f"{'protocol':>8} {'conc.':>5} {'server':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for protocol in ("rest", "grpc"):
        for c in CONCURRENCY:
            for name in ("naive", "kserve", "slipway"):
                r = results[name][protocol].get(c)
                if r:
                    errors = r.get("non2xx", r.get("errors", 0))
                    print(
                        f"{protocol:>8} {c:>5} {name:>8} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {errors:7.0f}"
                    )
            s, k = results["slipway"][protocol][c], results["kserve"][protocol][c]
            print(f"{'':>14} slipway/kserve: req/s {s['rps'] / k['rps']:.2f}x, p50 {s['p50'] / k['p50']:.2f}x, "
                  f"p99 {s['p99'] / k['p99']:.2f}x")  # fmt: skip
    (OUT / "serve_vs_kserve.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
