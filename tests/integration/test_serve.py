"""The inference server for real: trained models exported to ONNX/TorchScript, served on loopback, spoken to
over HTTP in the Open Inference Protocol v2 as KServe and Triton clients speak it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specs import prepare_and_train


@dataclass
class Served:
    url: str
    name: str
    process: subprocess.Popen[str]
    dataset: Path

    def infer(self, body: Any, name: str | None = None, **kw: Any) -> requests.Response:
        return requests.post(f"{self.url}/v2/models/{name or self.name}/infer", json=body, timeout=30, **kw)


def start(root: Path, name: str, model: Path, **server: Any) -> Iterator[subprocess.Popen[str]]:
    ready = root / f"{name}.ready"
    ready.unlink(missing_ok=True)
    config = root / f"{name}.json"
    config.write_text(
        json.dumps({"modelUri": model.as_uri(), "modelName": name, "port": 0, "readyFile": str(ready), **server})
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway_trainer", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.1)
    yield process
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def fashion(root: Path) -> Iterator[Served]:
    dataset, model = prepare_and_train(
        root,
        "fashion",
        {"source": {"uri": "builtin://fashion-mnist"}, "sample": {"rows": 2000}, "split": {"stratifyBy": "label"}},
        {
            "model": {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}},
            "training": {"epochs": 2, "batchSize": 64},
            "optimizer": {"learningRate": 0.003},
        },
    )
    for process in start(
        root,
        "fashion",
        model,
        server={
            "batching": {"maxBatchSize": 64, "maxLatencyMs": 20},
            "limits": {"maxBodyBytes": 2_000_000, "maxRowsPerRequest": 256},
        },
        grpcPort=0,
    ):
        port = json.loads((root / "fashion.ready").read_text())["port"]
        yield Served(f"http://127.0.0.1:{port}", "fashion", process, dataset)


@pytest.fixture(scope="module")
def mpg(root: Path) -> Iterator[Served]:
    dataset, model = prepare_and_train(
        root,
        "mpg",
        {
            "source": {"uri": "builtin://vega/cars"},
            "label": "Miles_per_Gallon",
            "cleaning": {"missing": {"default": "drop", "columns": {"Horsepower": "median"}}},
            "transforms": [{"type": "oneHot", "columns": ["Origin"]}, {"type": "standardize"}],
            "privacy": {"dropColumns": ["Name", "Year"]},
        },
        {
            "model": {"architecture": "mlp", "params": {"hidden": [32]}},
            "objective": {"loss": "mse", "metric": "mae", "direction": "minimize"},
            "optimizer": {"learningRate": 0.01},
            "training": {"epochs": 60, "batchSize": 32},
            "export": {"formats": ["torchscript"]},
        },
    )
    for process in start(
        root,
        "mpg",
        model,
        server={"format": "torchscript"},
        monitoring={"drift": {"method": "psi", "threshold": 0.2, "windowSize": 200}},
        grpcPort=0,
    ):
        port = json.loads((root / "mpg.ready").read_text())["port"]
        yield Served(f"http://127.0.0.1:{port}", "mpg", process, dataset)


def test_health_and_metadata_speak_oip_v2(fashion: Served) -> None:
    assert requests.get(f"{fashion.url}/v2/health/live", timeout=5).status_code == 200
    assert requests.get(f"{fashion.url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{fashion.url}/v2/models/fashion/ready", timeout=5).status_code == 200
    meta = requests.get(f"{fashion.url}/v2/models/fashion", timeout=5).json()
    assert meta["name"] == "fashion" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0]["shape"] == [-1, 28, 28, 1]
    assert meta["parameters"]["class_names"][9] == "Ankle boot"
    assert requests.get(f"{fashion.url}/v2", timeout=5).json()["name"] == "slipway"


def test_images_sent_as_pixels_get_labels_and_probabilities(fashion: Served) -> None:
    test = pq.read_table(next((fashion.dataset).glob("v-*/test/*.parquet")))
    pixels = np.stack([np.frombuffer(b, dtype=np.uint8) for b in test.column("image").to_pylist()[:40]])
    truth = test.column("label").to_pylist()[:40]
    answer = fashion.infer(
        {
            "id": "r1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [40, 28, 28],
                    "datatype": "UINT8",
                    "data": pixels.reshape(40, 28, 28).tolist(),
                }
            ],
        }
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "r1" and body["model_name"] == "fashion"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [40, 10]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(40, 10)
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4)
    accuracy = np.mean(np.array(outputs["label"]["data"]) == np.array(truth))
    assert accuracy > 0.5  # a 2-epoch CNN on 1,600 images; chance is 0.1
    assert outputs["class_name"]["data"][0] in meta_names(fashion)


def meta_names(served: Served) -> list[str]:
    return list(requests.get(f"{served.url}/v2/models/{served.name}", timeout=5).json()["parameters"]["class_names"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(fashion: Served) -> None:
    images = np.random.default_rng(0).integers(0, 255, (32, 28, 28))
    single = [
        fashion.infer(
            {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": images[i].tolist()}]}
        ).json()
        for i in range(4)
    ]
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda i: fashion.infer(
                    {
                        "inputs": [
                            {"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": images[i].tolist()}
                        ]
                    }
                ).json(),
                range(32),
            )
        )
    for i in range(4):
        assert answers[i]["outputs"][0]["data"] == single[i]["outputs"][0]["data"]
    metrics = requests.get(f"{fashion.url}/metrics", timeout=5).text
    batches = [line for line in metrics.splitlines() if line.startswith("slipway_inference_batch_rows_count")]
    rows = [line for line in metrics.splitlines() if line.startswith("slipway_inference_batch_rows_sum")]
    assert float(rows[0].split()[-1]) > float(batches[0].split()[-1])  # some model calls took several requests


BAD = [
    ("not-json", "{nope", 400, "not valid JSON"),
    ("no-inputs", {"id": "x"}, 400, "`inputs` must be a non-empty list"),
    (
        "wrong-shape",
        {"inputs": [{"name": "input", "shape": [1, 27, 27], "datatype": "UINT8", "data": [0] * 729}]},
        400,
        "this model takes [rows, 28, 28] pixels",
    ),
    (
        "shape-data-mismatch",
        {"inputs": [{"name": "input", "shape": [2, 28, 28], "datatype": "UINT8", "data": [0] * 784}]},
        400,
        "needs 1568",
    ),
    (
        "wrong-datatype",
        {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP128", "data": [0] * 784}]},
        400,
        "datatype 'FP128' is not one of",
    ),
    (
        "text-pixels",
        {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "BYTES", "data": ["a"] * 784}]},
        400,
        "pixels must be numbers",
    ),
    (
        "pixels-out-of-range",
        {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP32", "data": [300.0] * 784}]},
        400,
        "within 0..255",
    ),
    (
        "too-many-rows",
        {"inputs": [{"name": "input", "shape": [257, 28, 28], "datatype": "UINT8", "data": [0] * (257 * 784)}]},
        400,
        "the limit is 256",
    ),
    (
        "nested-20000-levels",
        '{"inputs": ' + "[" * 20_000 + "]" * 20_000 + "}",
        400,
        "nested too deeply",
    ),
    (
        "data-nested-40-levels",
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1],
                    "datatype": "UINT8",
                    "data": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                }
            ]
        },
        400,
        "nested more than 32 levels",
    ),
    (
        "number-beyond-float",
        '{"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP32", "data": [1e400' + ", 0" * 783 + "]}]}",
        400,
        "within 0..255",
    ),
    (
        "integer-beyond-float",
        '{"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": [1'
        + "0" * 400
        + ", 0" * 783
        + "]}]}",
        400,
        "within 0..255",
    ),
    (
        "unknown-output",
        {
            "inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}],
            "outputs": [{"name": "logits"}],
        },
        400,
        "unknown outputs logits",
    ),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem(
    fashion: Served, case: str, body: Any, status: int, message: str
) -> None:
    if isinstance(body, str):
        answer = requests.post(f"{fashion.url}/v2/models/fashion/infer", data=body, timeout=30)
    else:
        answer = fashion.infer(body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_wrong_model_name_and_oversized_bodies_are_refused_and_the_server_keeps_serving(fashion: Served) -> None:
    wrong = fashion.infer({"inputs": []}, name="other")
    assert wrong.status_code == 404 and "model 'other' is not served here" in wrong.json()["error"]
    big = requests.post(
        f"{fashion.url}/v2/models/fashion/infer",
        data=b"x" * 3_000_000,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert big.status_code == 413
    ok = fashion.infer({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]})
    assert ok.status_code == 200
    metrics = requests.get(f"{fashion.url}/metrics", timeout=5).text
    assert 'slipway_inference_requests_total{code="404",model="fashion"}' in metrics
    assert 'slipway_inference_requests_total{code="200",model="fashion"}' in metrics


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=30,
)
TENSORISH = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["input", "x", ""]),
                    "shape": st.lists(st.integers(-1, 30), max_size=4),
                    "datatype": st.sampled_from(["UINT8", "FP32", "BYTES", "INT64", "X"]),
                    "data": JSON,
                }
            ),
            max_size=2,
        )
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=st.one_of(JSON, TENSORISH))
def test_fuzzed_requests_never_crash_the_server(fashion: Served, body: Any) -> None:
    answer = fashion.infer(body)
    assert answer.status_code < 500, answer.text
    assert fashion.process.poll() is None


def test_grpc_answers_a_triton_client_as_rest_does_and_refuses_bad_calls_with_their_status(
    root: Path, fashion: Served
) -> None:
    """OIP v2 over gRPC on the server's second port, spoken by Triton's own Python client (raw contents, as it sends
    them) and by a typed-contents request: the same answers as REST, the same limits, feedback by the gRPC request's
    id, the requests counted in /metrics."""
    import grpc
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    from slipway_trainer.serve.grpc_v2 import MESSAGES

    address = f"127.0.0.1:{json.loads((root / 'fashion.ready').read_text())['grpcPort']}"
    client = triton.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fashion")
    meta = client.get_model_metadata("fashion")
    assert meta.name == "fashion" and meta.inputs[0].datatype == "UINT8" and meta.outputs[0].name == "label"
    assert client.get_server_metadata().name == "slipway"

    images = np.random.default_rng(3).integers(0, 255, (3, 28, 28)).astype(np.uint8)
    tensor = triton.InferInput("input", [3, 28, 28], "UINT8")
    tensor.set_data_from_numpy(images)
    wanted = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
    result = client.infer("fashion", [tensor], outputs=wanted, request_id="grpc-1")
    body = {"inputs": [{"name": "input", "shape": [3, 28, 28], "datatype": "UINT8", "data": images.tolist()}]}
    rest = {t["name"]: t["data"] for t in fashion.infer(body).json()["outputs"]}
    assert result.as_numpy("label").tolist() == rest["label"]
    assert result.as_numpy("probabilities").reshape(-1).tolist() == pytest.approx(rest["probabilities"], abs=1e-5)
    assert result.get_response().id == "grpc-1"
    truth = {"id": "grpc-1", "truth": result.as_numpy("label").tolist()}
    assert requests.post(f"{fashion.url}/v2/models/fashion/feedback", json=truth, timeout=10).status_code == 200

    with grpc.insecure_channel(address) as channel:  # typed contents, the other form the protocol allows
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=MESSAGES["ModelInferRequest"].SerializeToString,
            response_deserializer=MESSAGES["ModelInferResponse"].FromString,
        )
        request = MESSAGES["ModelInferRequest"](model_name="fashion")
        typed = request.inputs.add(name="input", datatype="UINT8", shape=[3, 28, 28])
        typed.contents.uint_contents.extend(images.reshape(-1).tolist())
        answer = infer(request, timeout=10)
        assert list(answer.outputs[0].contents.int64_contents) == rest["label"] and not answer.raw_output_contents
        # UINT8 values travel as uint32 in typed contents: one above 255 is refused, not wrapped around to 44.
        typed.contents.uint_contents[0] = 300
        with pytest.raises(grpc.RpcError) as wrapped:
            infer(request, timeout=10)
        assert wrapped.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "0..255" in str(wrapped.value.details())

    bad = triton.InferInput("input", [1, 5], "UINT8")
    bad.set_data_from_numpy(np.zeros((1, 5), np.uint8))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("fashion", [bad])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "[1, 5]" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("other", [tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "'other' is not served here" in unknown.value.message()
    huge = triton.InferInput("input", [3000, 28, 28], "UINT8")  # 2.4 MB, above maxBodyBytes (2 MB)
    huge.set_data_from_numpy(np.zeros((3000, 28, 28), np.uint8))
    with pytest.raises(InferenceServerException) as oversized:
        client.infer("fashion", [huge])
    assert oversized.value.status() == "StatusCode.RESOURCE_EXHAUSTED", oversized.value
    assert client.is_server_ready()  # and it keeps serving
    metrics = requests.get(f"{fashion.url}/metrics", timeout=5).text
    assert 'slipway_inference_requests_total{code="400",model="fashion"}' in metrics


def test_tabular_requests_by_tensor_and_by_column_agree(mpg: Served) -> None:
    meta = requests.get(f"{mpg.url}/v2/models/mpg", timeout=5).json()
    features = meta["parameters"]["features"]
    assert meta["platform"] == "pytorch_torchscript" and "Origin" in features
    cars = [
        {
            "Cylinders": 4,
            "Displacement": 97.0,
            "Horsepower": 88.0,
            "Weight_in_lbs": 2130,
            "Acceleration": 14.5,
            "Origin": "Japan",
        },
        {
            "Cylinders": 8,
            "Displacement": 350.0,
            "Horsepower": None,
            "Weight_in_lbs": 4100,
            "Acceleration": 11.0,
            "Origin": "USA",
        },
    ]
    tensor = mpg.infer(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, len(features)],
                    "datatype": "BYTES",
                    "data": [[car[f] for f in features] for car in cars],
                }
            ]
        }
    )
    assert tensor.status_code == 200, tensor.text
    columns = mpg.infer(
        {
            "inputs": [
                {
                    "name": f,
                    "shape": [2],
                    "datatype": "BYTES" if f == "Origin" else "FP64",
                    "data": [car[f] for car in cars],
                }
                for f in features
            ]
        }
    )
    assert columns.status_code == 200, columns.text
    a, b = tensor.json()["outputs"][0]["data"], columns.json()["outputs"][0]["data"]
    assert a == pytest.approx(b)
    assert a[0] > a[1] + 5  # a light Japanese four-cylinder goes further on a gallon than a heavy V8
    missing = mpg.infer(
        {
            "inputs": [
                {
                    "name": f,
                    "shape": [1],
                    "datatype": "BYTES" if f == "Origin" else "FP64",
                    "data": [None if f == "Weight_in_lbs" else cars[0][f]],
                }
                for f in features
            ]
        }
    )
    assert missing.status_code == 400 and "Weight_in_lbs" in missing.json()["error"]


def test_a_tabular_model_over_grpc_takes_bytes_rows_as_triton_sends_them(root: Path, mpg: Served) -> None:
    import tritonclient.grpc as triton

    features = requests.get(f"{mpg.url}/v2/models/mpg", timeout=5).json()["parameters"]["features"]
    car = {"Cylinders": 4, "Displacement": 97.0, "Horsepower": 88.0, "Weight_in_lbs": 2130, "Acceleration": 14.5,
           "Origin": "Japan"}  # fmt: skip
    tensor = triton.InferInput("input", [1, len(features)], "BYTES")
    tensor.set_data_from_numpy(np.array([[str(car[f]) for f in features]], dtype=object))
    client = triton.InferenceServerClient(f"127.0.0.1:{json.loads((root / 'mpg.ready').read_text())['grpcPort']}")
    over_grpc = client.infer("mpg", [tensor]).as_numpy("prediction").tolist()
    body = {"inputs": [{"name": "input", "shape": [1, len(features)], "datatype": "BYTES",
                        "data": [[car[f] for f in features]]}]}  # fmt: skip
    assert over_grpc == pytest.approx(mpg.infer(body).json()["outputs"][0]["data"], abs=1e-4)


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity", "1" + "0" * 400])
def test_a_number_no_float_holds_is_refused_naming_the_feature_and_the_server_keeps_serving(
    mpg: Served, value: str
) -> None:
    """JSON parsers read 1e400 as infinity and accept NaN/Infinity: an answer computed on them would look complete."""
    features = requests.get(f"{mpg.url}/v2/models/mpg", timeout=5).json()["parameters"]["features"]
    car = {"Cylinders": "4", "Displacement": "97.0", "Horsepower": value, "Weight_in_lbs": "2130",
           "Acceleration": "14.5", "Origin": '"Japan"'}  # fmt: skip

    def body(horsepower: str) -> str:
        car["Horsepower"] = horsepower
        datatype = {f: "BYTES" if f == "Origin" else "FP64" for f in features}
        inputs = [f'{{"name": "{f}", "shape": [1], "datatype": "{datatype[f]}", "data": [{car[f]}]}}' for f in features]
        return f'{{"inputs": [{", ".join(inputs)}]}}'

    answer = requests.post(f"{mpg.url}/v2/models/mpg/infer", data=body(value), timeout=10)
    assert answer.status_code == 400 and "'Horsepower' must be numeric" in answer.json()["error"], answer.text
    feedback = requests.post(f"{mpg.url}/v2/models/mpg/feedback", data=f'{{"id": "x", "truth": {value}}}', timeout=10)
    assert feedback.status_code in (400, 404), feedback.text  # refused, never a 5xx
    assert requests.post(f"{mpg.url}/v2/models/mpg/infer", data=body("88.0"), timeout=10).status_code == 200


def test_drift_is_measured_against_the_training_profile(mpg: Served) -> None:
    train = pq.read_table(next(mpg.dataset.glob("v-*/train/*.parquet")))
    features = requests.get(f"{mpg.url}/v2/models/mpg", timeout=5).json()["parameters"]["features"]

    def send(rows: dict[str, list[Any]]) -> None:
        n = len(rows[features[0]])
        answer = mpg.infer(
            {
                "inputs": [
                    {"name": f, "shape": [n], "datatype": "BYTES" if f == "Origin" else "FP64", "data": rows[f]}
                    for f in features
                ]
            }
        )
        assert answer.status_code == 200, answer.text

    like_training = {f: train.column(f).to_pylist()[:200] for f in features}
    send(like_training)
    calm = requests.get(f"{mpg.url}/v2/models/mpg/drift", timeout=5).json()
    assert "Weight_in_lbs" not in calm["drifted"] and calm["maxScore"] is not None
    heavier = {**like_training, "Weight_in_lbs": [w + 2500 for w in like_training["Weight_in_lbs"]]}
    send(heavier)
    drifted = requests.get(f"{mpg.url}/v2/models/mpg/drift", timeout=5).json()
    assert "Weight_in_lbs" in drifted["drifted"] and drifted["scores"]["Weight_in_lbs"] > 0.2
    metrics = requests.get(f"{mpg.url}/metrics", timeout=5).text
    assert 'slipway_drift_score{feature="Weight_in_lbs",method="psi",model="mpg"}' in metrics
    assert "slipway_input_feature_mean" in metrics and "slipway_prediction_value_bucket" in metrics


def test_sigterm_lets_in_flight_requests_finish_and_drops_readiness_first(root: Path, fashion: Served) -> None:
    """Two requests are in flight when SIGTERM arrives: one still uploading its body, one waiting in the
    batcher for company. Both are answered 200, readiness is 503 meanwhile, and the server exits 0."""
    model = root / "fashion-run" / "model"  # trained by the fashion fixture
    process = next(start(root, "graceful", model, server={"batching": {"maxBatchSize": 64, "maxLatencyMs": 1500}}))
    port = json.loads((root / "graceful.ready").read_text())["port"]
    url = f"http://127.0.0.1:{port}"
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]}
    ).encode()
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall(
        b"POST /v2/models/graceful/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body[:10]
    )
    time.sleep(0.3)  # its handler has started and awaits the rest of the body
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            requests.post(f"{url}/v2/models/graceful/infer", data=body, timeout=30).status_code
        )
    )
    sender.start()
    time.sleep(0.3)  # waiting in the batcher: another request is in flight, so it waits for company
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 503
    assert requests.post(f"{url}/v2/models/graceful/infer", data=body, timeout=5).status_code == 503
    slow.sendall(body[10:])
    reply = b""
    while chunk := slow.recv(65536):
        reply += chunk
    slow.close()
    sender.join(timeout=30)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert answers == [200]
    assert process.wait(timeout=60) == 0


def test_a_server_given_a_gpu_runs_on_it_or_refuses_to_start_saying_why(root: Path, fashion: Served) -> None:
    """`device: cuda` (what the operator sets for `resources.gpus > 0`) never silently serves on the CPU: where this
    machine's runtime can use CUDA the model answers from it, elsewhere the server exits at start-up naming
    `resources.gpus` and what to change (a crash the failure diagnosis shows, not a slow CPU server)."""
    import onnxruntime
    import torch

    model = root / "fashion-run" / "model"  # trained by the fashion fixture
    usable = {
        "onnx": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
        "torchscript": torch.cuda.is_available(),
    }
    for fmt, can in usable.items():
        if can:
            process = next(start(root, f"gpu-{fmt}", model, server={"format": fmt}, device="cuda"))
            port = json.loads((root / f"gpu-{fmt}.ready").read_text())["port"]
            body = {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]}
            answer = requests.post(f"http://127.0.0.1:{port}/v2/models/gpu-{fmt}/infer", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            process.terminate()
            assert process.wait(timeout=60) == 0
            continue
        config = root / f"gpu-{fmt}.json"
        config.write_text(json.dumps({"modelUri": model.as_uri(), "server": {"format": fmt}, "device": "cuda"}))
        refused = subprocess.run(
            [sys.executable, "-m", "slipway_trainer", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "resources.gpus" in refused.stderr and "error:" in refused.stderr, refused.stderr


SALT = "a-salt-only-the-test-knows"
ORIGINS = ("USA", "Europe", "Japan")


def test_feedback_measures_live_quality_and_payloads_reach_the_store_with_the_datasets_privacy(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained on cars whose Origin was hashed (privacy.hashColumns, salt from the environment as a
    Secret gives it): the server hashes Origin as training did, logs sampled payloads and the feedback sent for
    them to the store, and no raw Origin ever reaches it; feedback for an unknown request is refused and counted,
    and live MAE/RMSE appear in /metrics."""
    from slipway_trainer.artifacts import SALT_ENV

    monkeypatch.setenv(SALT_ENV, SALT)
    dataset, model = prepare_and_train(
        root,
        "private",
        {
            "source": {"uri": "builtin://vega/cars"},
            "label": "Miles_per_Gallon",
            "cleaning": {"missing": {"default": "drop"}},
            "transforms": [{"type": "oneHot", "columns": ["Origin"]}, {"type": "standardize"}],
            "privacy": {"dropColumns": ["Name", "Year"], "hashColumns": ["Origin"]},
        },
        {
            "model": {"architecture": "mlp", "params": {"hidden": [16]}},
            "objective": {"loss": "mse", "metric": "mae", "direction": "minimize"},
            "optimizer": {"learningRate": 0.03},
            "training": {"epochs": 40, "batchSize": 32},
        },
    )
    store = root / "payload-store"
    server = start(
        root,
        "private",
        model,
        monitoring={"payloadLog": {"enabled": True, "uri": store.as_uri(), "flushIntervalSeconds": 0.5}},
    )
    process = next(server)
    try:
        check_feedback_and_payloads(root, dataset, store, process)
    finally:  # the checks stop the server; if they failed first, stop it here
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)


def check_feedback_and_payloads(root: Path, dataset: Path, store: Path, process: subprocess.Popen[str]) -> None:
    url = f"http://127.0.0.1:{json.loads((root / 'private.ready').read_text())['port']}"
    test = pq.read_table(next(dataset.glob("v-*/test/*.parquet"))).to_pylist()
    assert {row["Origin"] for row in test} <= {hashed(o) for o in ORIGINS}  # what training saw
    features = requests.get(f"{url}/v2/models/private", timeout=5).json()["parameters"]["features"]
    by_hash = {hashed(o): o for o in ORIGINS}
    answers = []
    cars = test[:40]  # the test split has 39 or so
    for i, row in enumerate(cars):
        raw = {**row, "Origin": by_hash[row["Origin"]]}  # clients send what they know, not the hash
        inputs = [{"name": f, "shape": [1], "datatype": "BYTES", "data": [raw[f]]} for f in features]
        answer = requests.post(f"{url}/v2/models/private/infer", json={"id": f"car-{i}", "inputs": inputs}, timeout=10)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["outputs"][0]["data"][0])
    anonymous = requests.post(f"{url}/v2/models/private/infer", json={"inputs": inputs}, timeout=10).json()
    assert len(anonymous["id"]) == 32  # the server names a request the client did not, for feedback to use
    truths = [row["Miles_per_Gallon"] for row in cars]
    sent = requests.post(
        f"{url}/v2/models/private/feedback",
        json={"feedback": [{"id": f"car-{i}", "truth": [t], "group": group(cars[i])} for i, t in enumerate(truths)]},
        timeout=10,
    )
    assert sent.status_code == 200, sent.text
    mae = float(np.mean(np.abs(np.array(answers) - np.array(truths))))
    assert sent.json()["quality"]["metrics"]["mae"] == pytest.approx(mae, rel=1e-3)
    heavy = [abs(a - t) for a, t, car in zip(answers, truths, cars, strict=True) if group(car) == "heavy"]
    groups = sent.json()["quality"]["groups"]  # live quality per group the feedback named
    assert groups["heavy"]["rows"] == len(heavy) and groups["light"]["rows"] == len(cars) - len(heavy)
    assert groups["heavy"]["metrics"]["mae"] == pytest.approx(float(np.mean(heavy)), rel=1e-3)
    assert mae < 6  # a trained model on hashed-as-in-training origins; a constant guess is about 6.5
    unknown = requests.post(f"{url}/v2/models/private/feedback", json={"id": "car-999", "truth": 20}, timeout=10)
    assert unknown.status_code == 404 and "car-999" in unknown.json()["error"]
    again = requests.post(f"{url}/v2/models/private/feedback", json={"id": "car-0", "truth": 20}, timeout=10)
    assert again.status_code == 409
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert f'slipway_live_quality{{metric="mae",model="private"}} {mae:.3f}'[:-2] in metrics
    assert 'slipway_feedback_total{model="private",outcome="unknown_id"} 1.0' in metrics
    assert f'slipway_live_quality_group_rows{{group="heavy",model="private"}} {len(heavy)}.0' in metrics
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    payloads = pq.read_table(store / "payloads").to_pylist()  # partitioned by date=
    assert len(payloads) == len(cars) + 1 and {p["request_id"] for p in payloads} >= {
        f"car-{i}" for i in range(len(cars))
    }
    assert {p["Origin"] for p in payloads} <= {hashed(o) for o in ORIGINS}
    logged = pq.read_table(store / "feedback").to_pylist()
    assert sorted(r["truth"] for r in logged) == sorted(truths)
    everything = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert not any(o.encode() in everything for o in ORIGINS)  # no raw value of the hashed column, anywhere


def group(car: dict[str, Any]) -> str:
    """The group a feedback row names: not a hashed column (a group name is logged as sent)."""
    return "heavy" if car["Weight_in_lbs"] > 3000 else "light"


def hashed(value: str) -> str:
    from slipway_trainer.privacy import hash_values

    return str(hash_values(pa.array([value]), SALT.encode())[0].as_py())


def test_feedback_reaching_a_replica_that_did_not_answer_is_taken_by_the_one_that_did(
    root: Path, fashion: Served
) -> None:
    """Two replicas of one deployment behind a Service (here: two servers that list each other, as `slipway run`'s
    router table does): feedback for requests replica A answered, sent to replica B, is relayed to A, taken there
    and counted once; feedback no replica knows is refused as unknown after asking; a relayed body is never
    relayed again."""
    routes = root / "routes.json"
    model, urls, procs = root / "fashion-run" / "model", [], []
    for replica in ("replica-a", "replica-b"):
        process = next(start(root, replica, model, modelName="fashion", peers=routes.as_uri()))
        procs.append(process)
        urls.append(f"http://127.0.0.1:{json.loads((root / f'{replica}.ready').read_text())['port']}")
    routes.write_text(json.dumps({"backends": [{"url": u} for u in urls]}))
    a, b = urls
    try:
        images = np.random.default_rng(1).integers(0, 255, (6, 28, 28))
        labels = []
        for i, image in enumerate(images):
            body = {"id": f"a-{i}", "inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
                                                "data": image.tolist()}]}  # fmt: skip
            answer = requests.post(f"{a}/v2/models/fashion/infer", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            labels.append(answer.json()["outputs"][0]["data"][0])
        body = {"feedback": [{"id": f"a-{i}", "truth": [label]} for i, label in enumerate(labels)]}
        relayed = requests.post(f"{b}/v2/models/fashion/feedback", json=body, timeout=10)
        assert relayed.status_code == 200, relayed.text
        assert relayed.json()["accepted"] == 6 and relayed.json()["quality"]["metrics"]["accuracy"] == 1.0
        assert requests.get(f"{a}/v2/models/fashion/quality", timeout=5).json()["rows"] == 6
        assert requests.get(f"{b}/v2/models/fashion/quality", timeout=5).json()["rows"] == 0
        again = requests.post(f"{b}/v2/models/fashion/feedback", json=body, timeout=10)
        assert again.status_code == 409 and "already has feedback" in again.json()["error"]  # A's own refusal

        unknown = requests.post(f"{b}/v2/models/fashion/feedback", json={"id": "nobody", "truth": 1}, timeout=10)
        assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]
        direct = requests.post(f"{a}/v2/models/fashion/feedback", json={"id": "a-0", "truth": 1}, timeout=10,
                               headers={"X-Slipway-Forwarded": "1"})  # fmt: skip
        assert direct.status_code == 409  # A knows it: relayed or not, A judges it
        looped = requests.post(f"{b}/v2/models/fashion/feedback", json={"id": "a-1", "truth": 1}, timeout=10,
                               headers={"X-Slipway-Forwarded": "1"})  # fmt: skip
        assert looped.status_code == 404  # a relayed body is not relayed again
        metrics_b = requests.get(f"{b}/metrics", timeout=5).text
        assert 'slipway_feedback_total{model="fashion",outcome="forwarded"} 2.0' in metrics_b
        assert 'slipway_feedback_total{model="fashion",outcome="unknown_id"} 1.0' in metrics_b
        metrics_a = requests.get(f"{a}/metrics", timeout=5).text
        assert 'outcome="unknown_id"' not in metrics_a  # B's question is counted at B only
    finally:
        for process in procs:
            process.terminate()
            process.wait(timeout=60)


def metric(text: str, sample: str) -> float:
    """One sample's value in a /metrics page (0 when absent)."""
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(found[0]) if found else 0.0


def metrics_once(url: str, sample: str, at_least: float, seconds: float = 30) -> str:
    """A server's /metrics once `sample` reached `at_least` (or the last page read, when it did not in time)."""
    deadline, seen = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        seen = requests.get(f"{url}/metrics", timeout=5).text
        if metric(seen, sample) >= at_least:
            break
        time.sleep(0.2)
    return seen


def test_a_server_mirrors_copies_to_a_shadow_and_compares_answers_while_users_get_only_its_own(
    root: Path, fashion: Served
) -> None:
    """rollout.shadow on the wire: a stable server with `mirror` answers its clients, then sends each request to the
    shadow server(s) in its table and counts the copies and the rows whose labels agree; the shadow answers copies
    without remembering them (feedback for them is refused there) or mirroring them again. A shadow that cannot be
    reached only counts failed copies: clients still get every answer."""
    import grpc

    from slipway_trainer.serve.grpc_v2 import MESSAGES

    model, shadow_routes = root / "fashion-run" / "model", root / "shadow-routes.json"
    shadow = next(start(root, "shadow", model, modelName="fashion", mirror=(root / "none.json").as_uri()))
    shadow_url = f"http://127.0.0.1:{json.loads((root / 'shadow.ready').read_text())['port']}"
    shadow_routes.write_text(json.dumps({"backends": [{"url": shadow_url}]}))
    stable = next(start(root, "stable", model, modelName="fashion", mirror=shadow_routes.as_uri(), grpcPort=0))
    stable_url = f"http://127.0.0.1:{json.loads((root / 'stable.ready').read_text())['port']}"
    stable_grpc = f"127.0.0.1:{json.loads((root / 'stable.ready').read_text())['grpcPort']}"
    try:
        images = np.random.default_rng(2).integers(0, 255, (30, 2, 28, 28))
        for i, pair in enumerate(images):
            body = {"id": f"s-{i}", "inputs": [{"name": "input", "shape": [2, 28, 28], "datatype": "UINT8",
                                                "data": pair.tolist()}]}  # fmt: skip
            if i % 2:
                body["outputs"] = [{"name": "probabilities"}]  # the copy asks for the whole answer all the same
            answer = requests.post(f"{stable_url}/v2/models/fashion/infer", json=body, timeout=10)
            assert answer.status_code == 200 and answer.json()["model_name"] == "fashion", answer.text
        with grpc.insecure_channel(stable_grpc) as channel:  # a gRPC request is copied too (its tensors as JSON)
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=MESSAGES["ModelInferRequest"].SerializeToString,
                response_deserializer=MESSAGES["ModelInferResponse"].FromString,
            )
            request = MESSAGES["ModelInferRequest"](model_name="fashion")
            request.inputs.add(name="input", datatype="UINT8", shape=[2, 28, 28]).contents.uint_contents.extend(
                images[0].reshape(-1).tolist()
            )
            infer(request, timeout=10)
        answered = 'slipway_shadow_requests_total{model="fashion",outcome="answered"}'
        seen = metrics_once(stable_url, answered, 31)
        assert metric(seen, answered) == 31, seen
        assert metric(seen, 'slipway_shadow_rows_total{model="fashion",task="classification"}') == 62
        assert metric(seen, 'slipway_shadow_agreed_rows_total{model="fashion",task="classification"}') == 62
        at_shadow = requests.get(f"{shadow_url}/metrics", timeout=5).text
        assert metric(at_shadow, 'slipway_inference_requests_total{code="200",model="fashion"}') == 31
        assert "slipway_shadow_requests_total{" not in at_shadow  # a copy is never mirrored again
        refused = requests.post(f"{shadow_url}/v2/models/fashion/feedback", json={"id": "s-0", "truth": 1}, timeout=5)
        assert refused.status_code == 404  # copies are not remembered: feedback belongs to the stable answers
        accepted = requests.post(f"{stable_url}/v2/models/fashion/feedback", json={"id": "s-0", "truth": [1, 2]},
                                 timeout=5)  # fmt: skip
        assert accepted.status_code == 200, accepted.text

        shadow.terminate()  # the shadow goes away: copies fail, clients notice nothing
        shadow.wait(timeout=60)
        body = {"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8", "data": images[0][0].tolist()}]}
        for _ in range(5):
            assert requests.post(f"{stable_url}/v2/models/fashion/infer", json=body, timeout=10).status_code == 200
        failed = 'slipway_shadow_requests_total{model="fashion",outcome="failed"}'
        seen = metrics_once(stable_url, failed, 5)
        assert metric(seen, failed) == 5, seen
    finally:
        for process in (shadow, stable):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)


def test_an_image_models_payload_log_with_its_feedback_prepares_into_an_image_dataset(
    root: Path, fashion: Served
) -> None:
    """The Fashion-MNIST server logs the pixels it was sent with their layout (shape, class names) in the parts'
    schema; joined with the feedback, they prepare into a dataset of 28x28 images labelled by the truth."""
    from slipway_trainer.config.prep import PrepConfig
    from slipway_trainer.data import workload as prep_workload

    store = root / "image-payloads"
    process = next(start(root, "fashion-log", root / "fashion-run" / "model", modelName="fashion",
                         monitoring={"payloadLog": {"enabled": True, "uri": store.as_uri()}}))  # fmt: skip
    url = f"http://127.0.0.1:{json.loads((root / 'fashion-log.ready').read_text())['port']}"
    images = np.random.default_rng(2).integers(0, 255, (8, 28, 28))
    for i in range(4):
        body = {"id": f"img-{i}", "inputs": [{"name": "input", "shape": [2, 28, 28], "datatype": "UINT8",
                                              "data": images[2 * i : 2 * i + 2].ravel().tolist()}]}  # fmt: skip
        assert requests.post(f"{url}/v2/models/fashion/infer", json=body, timeout=10).status_code == 200
        told = {"id": f"img-{i}", "truth": ["Sneaker", "Bag"]}
        assert requests.post(f"{url}/v2/models/fashion/feedback", json=told, timeout=10).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0  # the last parts are written on the way out
    out = root / "from-payloads"
    config = PrepConfig.model_validate({"outputUri": out.as_uri(), "spec": {
        "source": {"uri": store.as_uri(), "format": "payloads"}, "label": "truth"}})  # fmt: skip
    result = prep_workload.run(config)
    assert result["status"] == "Succeeded", result
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["rows"]["total"] == 8 and manifest["images"] == {**manifest["images"], "height": 28, "width": 28}
    assert manifest["classes"] == [7, 8] and manifest["classNames"] == ["Sneaker", "Bag"]  # the model's names
    pixels = pq.read_table(out / manifest["splits"]["train"]).column("image").to_pylist()
    assert all(len(p) == 784 for p in pixels) and {bytes(p) for p in pixels} <= {
        bytes(np.asarray(im, dtype=np.uint8).ravel()) for im in images}  # fmt: skip
