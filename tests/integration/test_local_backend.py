"""The local backend with real workloads and real processes: a RayJob becomes a `slipway_trainer` process that a
restarted operator adopts instead of starting twice, jobs queue for the machine, suspend stops and resume starts
again, and the loopback router splits traffic by weight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import testbed

from slipway_operator import builders
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.backends.local import LocalBackend
from slipway_operator.workloads import prep_config, train_config

OWNER = builders.Owner("slipway.dev/v1alpha1", "DatasetPrep", "digits", "ml", "uid-1")


def prep_children(name: str, output: Path, rows: int = 300) -> list[dict[str, Any]]:
    owner = builders.Owner(OWNER.api_version, OWNER.kind, name, OWNER.namespace, f"uid-{name}")
    spec = DatasetPrepSpec.model_validate(
        {"source": {"uri": "builtin://sklearn/digits"}, "label": "target", "sample": {"rows": rows}}
    )
    config = builders.config_text(prep_config(name, spec, output.as_uri()))
    job = builders.ray_job(
        owner, builders.Workload(step="prep", image="unused", resources=spec.resources, config=config)
    )
    return [job]


def job_status(backend: LocalBackend, children: list[dict[str, Any]]) -> dict[str, Any]:
    return dict((backend.observe(children[0]) or {}).get("status") or {})


def wait_for(backend: LocalBackend, children: list[dict[str, Any]], state: str, timeout: float = 180) -> None:
    testbed.wait_until(state, lambda: job_status(backend, children).get("jobDeploymentStatus") == state, timeout)


def test_a_job_runs_once_and_a_restarted_operator_adopts_it(tmp_path: Path) -> None:
    children = prep_children("digits", tmp_path / "out")
    first = LocalBackend(tmp_path / "state", stop_on_close=False)
    first.apply(children)
    assert job_status(first, children) == {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    pid = json.loads((tmp_path / "state/ml/rayjob/digits-prep/pid").read_text())["pid"]

    restarted = LocalBackend(tmp_path / "state")  # a new operator process: it knows nothing but the state folder
    restarted.apply(children)
    assert json.loads((tmp_path / "state/ml/rayjob/digits-prep/pid").read_text())["pid"] == pid
    testbed.wait_until(
        "the adopted job to end", lambda: job_status(restarted, children)["jobDeploymentStatus"] == "Complete", 180
    )
    # The process was the first operator's child: the restarted one learns its exit status from the state folder
    # (the shell that leads its process group writes it), not from being its parent.
    assert job_status(restarted, children)["jobStatus"] == "SUCCEEDED"
    assert json.loads((tmp_path / "out" / "_run" / "result.json").read_text())["status"] == "Succeeded"
    first.apply(children)  # and a pass after the end starts nothing
    assert json.loads((tmp_path / "state/ml/rayjob/digits-prep/pid").read_text())["pid"] == pid
    # The workload writes result.json and then stops its Ray: its parent sees the exit a moment later.
    testbed.wait_until(
        "the first operator to see the end", lambda: job_status(first, children)["jobStatus"] == "SUCCEEDED", 60
    )
    assert "prep" in (tmp_path / "state/ml/rayjob/digits-prep/log").read_text()


def test_jobs_queue_for_the_machine_and_suspend_stops_and_resume_restarts(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state", max_jobs=1)
    try:
        one, two = prep_children("one", tmp_path / "one", 1000), prep_children("two", tmp_path / "two")
        backend.apply(one)
        backend.apply(two)
        queued = job_status(backend, two)
        assert queued["jobDeploymentStatus"] == "Queued" and "behind 1 job" in queued["message"]

        suspended = [{**one[0], "spec": {**one[0]["spec"], "suspend": True}}]
        backend.apply(suspended)
        assert job_status(backend, one)["jobDeploymentStatus"] == "Suspended"
        wait_for(backend, two, "Running", 30)  # the free slot goes to the queued job
        wait_for(backend, two, "Complete")
        assert job_status(backend, two)["jobStatus"] == "SUCCEEDED"

        backend.apply(one)  # resumed: started again (the workload resumes from its artifacts)
        assert job_status(backend, one)["jobDeploymentStatus"] == "Running"
        wait_for(backend, one, "Complete")
        assert job_status(backend, one)["jobStatus"] == "SUCCEEDED"
    finally:
        backend.close()


def train_children(name: str, dataset: Path, output: Path, epochs: int) -> list[dict[str, Any]]:
    owner = builders.Owner(OWNER.api_version, "TrainingRun", name, OWNER.namespace, f"uid-{name}")
    spec = TrainingRunSpec.model_validate(
        {
            "dataset": {"ref": "digits"},
            "model": {"architecture": "mlp", "params": {"hidden": [32]}},
            "training": {"epochs": epochs, "batchSize": 16},
            "failurePolicy": {"maxFailures": 1},
        }
    )
    config = builders.config_text(train_config(name, spec, dataset.as_uri(), output.as_uri()))
    workload = builders.Workload(step="train", image="unused", resources=spec.resources, config=config)
    return [builders.ray_job(owner, workload)]


def test_a_training_job_killed_by_a_signal_starts_again_and_resumes_while_max_failures_allow(tmp_path: Path) -> None:
    """The local backend trains one worker in the job's own process (no Ray Train); killed (as the OOM killer
    would), the job starts again and resumes from its newest checkpoint; killed once more than
    `failurePolicy.maxFailures` (1) allows, it fails."""
    backend = LocalBackend(tmp_path / "state")
    try:
        prep = prep_children("digits", tmp_path / "data", 600)
        backend.apply(prep)
        wait_for(backend, prep, "Complete")
        train = train_children("digits-mlp", tmp_path / "data", tmp_path / "run", 400)
        backend.apply(train)
        folder = tmp_path / "state/ml/rayjob/digits-mlp-train"
        assert json.loads((folder / "config.json").read_text())["useRay"] is False

        def kill_at(epoch: int) -> None:
            progress = tmp_path / "run/progress.json"
            testbed.wait_until(
                f"epoch {epoch}",
                lambda: progress.exists() and (json.loads(progress.read_text()).get("epoch") or 0) >= epoch,
                120,
            )
            shell = json.loads((folder / "pid").read_text())["pid"]  # the group's leader; the workload is its child
            child = int(Path(f"/proc/{shell}/task/{shell}/children").read_text().split()[0])
            os.kill(child, signal.SIGKILL)
            testbed.wait_until("the kill seen", (folder / "exit").exists, 30)

        kill_at(3)
        assert job_status(backend, train) == {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
        assert "restart 1 of at most 1" in (folder / "log").read_text()
        resumed = tmp_path / "run/progress.json"
        testbed.wait_until("resumed", lambda: json.loads(resumed.read_text()).get("resumedFrom"), 120)
        kill_at(json.loads(resumed.read_text())["resumedFrom"][0] + 2)
        status = job_status(backend, train)
        assert status["jobDeploymentStatus"] == "Complete" and status["jobStatus"] == "FAILED", status
        assert "exited with code 137" in status["message"]
    finally:
        backend.close()


class Named(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def two_servers() -> Iterator[list[str]]:
    servers = []
    for name in ("a", "b"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Named)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()


def test_the_router_splits_by_weight_and_says_why_it_cannot_answer(tmp_path: Path, two_servers: list[str]) -> None:
    routes, ready = tmp_path / "routes.json", tmp_path / "ready.json"
    router = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slipway_operator.router",
            "--routes",
            str(routes),
            "--ready-file",
            str(ready),
            "--max-body-bytes",
            "1000",
        ]
    )
    try:
        testbed.wait_until("the router", ready.exists, 30)
        url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}/"
        with pytest.raises(urllib.error.HTTPError) as none_yet:
            urllib.request.urlopen(url, timeout=10)
        assert none_yet.value.code == 503

        def share(weights: tuple[int, int], n: int = 200) -> Counter[str]:
            routes.write_text(
                json.dumps({"backends": [{"url": u, "weight": w} for u, w in zip(two_servers, weights, strict=True)]})
            )
            time.sleep(0.05)
            return Counter(urllib.request.urlopen(url, timeout=10).read().decode() for _ in range(n))

        assert share((100, 0)) == {"a": 200}
        split = share((90, 10))
        assert 5 <= split["b"] <= 40 and split["a"] + split["b"] == 200  # ~20 expected
        too_big = urllib.request.Request(url, data=b"x" * 2000, method="POST")
        with pytest.raises(urllib.error.HTTPError) as big:
            urllib.request.urlopen(too_big, timeout=10)
        assert big.value.code == 413
    finally:
        router.terminate()
        router.wait(timeout=30)
