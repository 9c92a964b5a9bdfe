"""End to end: the Fashion-MNIST journey applied with kubectl to the test control plane, driven by the operator
with the local backend — real data prep, Ray Train, Ray Tune and inference servers on this machine — then
predictions from the endpoint the ModelDeployment's status names, and a canary promoted and one rolled back on
the servers' real /metrics.

The example manifests are applied with a small subset (2,000 images) and few epochs so it fits CI on 2 cores."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import testbed
import yaml
from kopf.testing import KopfRunner

from clients import Background

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fashion-mnist"


def small_journey() -> list[dict[str, Any]]:
    """The example journey, shrunk: 2,000 images, 2 epochs, a 2-trial sweep, one replica, short canary steps."""
    docs = {d["kind"]: d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())}
    prep, run, sweep, serve = (
        docs["DatasetPrep"],
        docs["TrainingRun"],
        docs["TuningSweep"],
        docs["ModelDeployment"],
    )
    prep["spec"]["sample"] = {"rows": 2000, "seed": 7}
    run["spec"]["model"]["params"] = {"channels": [8, 16], "hidden": 32, "dropout": 0.1}
    run["spec"]["training"] |= {"epochs": 2, "batchSize": 64}
    run["spec"]["training"].pop("earlyStopping", None)
    sweep["spec"]["template"]["model"]["params"] = {"channels": [8, 16], "hidden": 32, "dropout": 0.1}
    sweep["spec"]["template"]["training"] |= {"epochs": 2, "batchSize": 64}
    sweep["spec"]["searchSpace"] = {"optimizer.learningRate": {"grid": [0.003, 0.0003]}}
    # grid: maxTrials counts passes over the grid, so one pass is 2 trials
    sweep["spec"] |= {"algorithm": "grid", "maxTrials": 1, "parallelTrials": 1, "scheduler": {"type": "fifo"}}
    sweep["spec"]["objective"].pop("goal", None)
    serve["spec"]["replicas"] = {"min": 1}
    # A generous latency gate: on 2 busy cores a canary's first requests can take a few hundred ms, and with a
    # handful of requests per step the p99 is the slowest of them. (The rollback below uses an impossible gate.)
    serve["spec"]["rollout"]["canary"] |= {
        "intervalSeconds": 5,
        "analysis": {"maxErrorRate": 0.0, "maxP99LatencyMs": 5000},
    }
    # A shadow stage first: the candidate answers copies of the traffic; two 2-epoch models agree on most images.
    serve["spec"]["rollout"]["shadow"] = {"intervalSeconds": 5, "minRequests": 20, "minAgreement": 0.5}
    serve["spec"]["autoUpdate"] = {"enabled": False}
    return [prep, run, sweep, serve]


@pytest.fixture
def local_operator(
    kuberay_crds: testbed.ControlPlane,
    slipway_crds: testbed.ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """The operator with the local backend, watching `namespace`; yields the artifact store's folder."""
    store = tmp_path / "store"
    monkeypatch.setenv("KUBECONFIG", str(kuberay_crds.kubeconfig))
    monkeypatch.setenv("SLIPWAY_STORE", store.as_uri())
    monkeypatch.setenv("SLIPWAY_BACKEND", "local")
    monkeypatch.setenv("SLIPWAY_STATE", str(tmp_path / "state"))
    runner = KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"])
    with runner:
        yield store
    assert runner.exit_code == 0, runner.output[-3000:]


def get(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out else {}


def status(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(get(plane, kind, name, namespace).get("status") or {})


def wait_for_phase(
    plane: testbed.ControlPlane, kind: str, name: str, namespace: str, phases: set[str], timeout: float
) -> dict[str, Any]:
    def check() -> bool:
        phase = status(plane, kind, name, namespace).get("phase")
        if phase in ("Failed", "Invalid") and phase not in phases:
            raise AssertionError(f"{kind} {name} {phase}: {status(plane, kind, name, namespace).get('message')}")
        return phase in phases

    try:
        testbed.wait_until(f"{kind} {name} to be {'/'.join(phases)}", check, timeout)
    except testbed.TestbedError as err:
        raise AssertionError(f"{err}\nlast status: {json.dumps(status(plane, kind, name, namespace))[:2000]}") from err
    return status(plane, kind, name, namespace)


def infer(endpoint: str, model: str, images: list[bytes], size: int = 28) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(images), size, size],
                "datatype": "UINT8",
                "data": [list(i) for i in images],
            }
        ]
    }
    request = urllib.request.Request(
        f"{endpoint}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return {o["name"]: o for o in json.loads(answer.read())["outputs"]}


def traffic(endpoint: str, model: str, images: list[bytes]) -> Background:
    """Requests of four images sent to an endpoint in the background while a rollout is judged."""

    def send() -> int:
        try:
            infer(endpoint, model, images[:4])
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0
        return 200

    return Background(send)


def test_the_fashion_journey_applied_with_kubectl_runs_on_the_local_backend_and_serves_predictions(
    control_plane: testbed.ControlPlane, namespace: str, local_operator: Path
) -> None:
    plane = control_plane
    journey = small_journey()
    plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": journey})
    )

    prep = wait_for_phase(plane, "datasetprep", "fashion", namespace, {"Succeeded"}, 300)
    assert prep["rows"]["total"] == 2000 and prep["fingerprint"].startswith("sha256:")
    run = wait_for_phase(plane, "trainingrun", "fashion-cnn", namespace, {"Succeeded"}, 600)
    assert run["metrics"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert run["lineage"]["datasetRef"] == "fashion" and run["lineage"]["datasetFingerprint"] == prep["fingerprint"]
    sweep = wait_for_phase(plane, "tuningsweep", "fashion-sweep", namespace, {"Succeeded"}, 900)
    assert sweep["trials"]["completed"] == 2 and sweep["bestTrial"]["params"]["optimizer.learningRate"] in (
        0.003,
        0.0003,
    )
    assert sweep["modelUri"] and sweep["lineage"]["tuningSweep"] == "fashion-sweep"

    serving = wait_for_phase(plane, "modeldeployment", "fashion", namespace, {"Available"}, 300)
    assert serving["endpoint"].startswith("http://127.0.0.1:") and serving["modelName"] == "fashion"
    assert serving["current"]["modelUri"] == sweep["modelUri"]
    assert serving["current"]["lineage"]["tuningSweep"] == "fashion-sweep"
    conditions = {c["type"]: c["status"] for c in serving["conditions"]}
    assert conditions["Ready"] == conditions["Available"] == "True" and conditions["Stalled"] == "False"

    # Predictions from the endpoint in the status, on test images the model never saw.
    dataset = Path(prep["outputUri"].removeprefix("file://"))
    manifest = json.loads((dataset / "manifest.json").read_text())
    test = pq.read_table(dataset / manifest["splits"]["test"]).slice(0, 100)
    images = test.column("image").to_pylist()
    truth = test.column(manifest["label"]).to_pylist()
    outputs = infer(serving["endpoint"], "fashion", images)
    right = sum(int(p == t) for p, t in zip(outputs["label"]["data"], truth, strict=True))
    assert right >= 50, f"{right}/100 right"
    table = plane.kubectl("get", "slipway", "-n", namespace)
    assert "fashion-sweep" in table and "Available" in table

    # Shadow, then canary: the TrainingRun's model answers copies of real traffic (users get the sweep's answers),
    # agrees enough with it, then replaces it step by step while the traffic passes the gate.
    with traffic(serving["endpoint"], "fashion", images) as load:
        plane.kubectl(
            "patch", "modeldeployment", "fashion", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"model": {"fromTuningSweep": None, "fromTrainingRun": "fashion-cnn"}}}),
        )  # fmt: skip
        testbed.wait_until(
            "a canary", lambda: status(plane, "modeldeployment", "fashion", namespace).get("canaryWeight") == 10, 240
        )
        shadowed = status(plane, "modeldeployment", "fashion", namespace)["shadowTraffic"]
        promoted = wait_for_phase(plane, "modeldeployment", "fashion", namespace, {"Available"}, 300)
    assert shadowed["verdict"] == "Passed" and shadowed["requests"] >= 20 and shadowed["rows"] >= 20, shadowed
    assert 0.5 <= shadowed["agreement"] <= 1.0 and shadowed["errorRate"] == 0.0, shadowed
    assert promoted["current"]["modelUri"] == run["modelUri"], promoted["history"][0]["reason"]
    assert promoted["history"][0]["modelUri"] == sweep["modelUri"] and promoted["history"][0]["outcome"] == "Replaced"
    assert promoted.get("canary") is None and load.codes[200] > 20
    judged = re.search(r"over (\d+) requests", promoted["history"][0]["reason"])
    assert judged and int(judged.group(1)) >= 20, promoted["history"][0]["reason"]  # analysis.minRequests
    assert set(load.codes) == {200}, "requests failed during the rollout"
    events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=fashion")
    assert "ShadowStarted" in events and "ShadowPassed" in events
    assert "CanaryStarted" in events and "CanaryStep" in events and "Promoted" in events

    # A candidate that cannot meet the latency gate (p99 under 1 microsecond) is rolled back in shadow, before any
    # user got one of its answers; the stable one serves on.
    plane.kubectl(
        "patch", "modeldeployment", "fashion", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {
            "model": {"fromTrainingRun": None, "fromTuningSweep": "fashion-sweep"},
            "rollout": {"canary": {"analysis": {"maxP99LatencyMs": 0.001}}},
        }}),
    )  # fmt: skip
    with traffic(serving["endpoint"], "fashion", images) as load:
        testbed.wait_until(
            "the candidate to be rolled back",
            lambda: any(
                h.get("outcome") == "RolledBack"
                for h in status(plane, "modeldeployment", "fashion", namespace).get("history", [])
            ),
            300,
        )
    after = status(plane, "modeldeployment", "fashion", namespace)
    assert after["current"]["modelUri"] == run["modelUri"] and after.get("canary") is None
    assert after["history"][0]["reason"].startswith("in shadow: "), after["history"][0]["reason"]
    assert "p99 above rollout.canary.analysis.maxP99LatencyMs" in after["history"][0]["reason"]
    assert set(load.codes) == {200}
    assert infer(serving["endpoint"], "fashion", images[:2])["label"]["data"]
