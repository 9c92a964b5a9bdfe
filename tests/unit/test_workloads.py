"""Workload configs built from resource specs carry the data fields and nothing Kubernetes-only; a workload's
exit status tells KubeRay whether a retry is worth it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.workloads import prep_config
from slipway_trainer import workload
from slipway_trainer.logship import window
from slipway_trainer.stop import StopRequest


def test_prep_config_leaves_secret_references_and_resources_behind() -> None:
    spec = DatasetPrepSpec.model_validate(
        {
            "source": {"uri": "s3://bucket/raw/", "format": "csv", "secretRef": "s3-creds"},
            "label": "y",
            "privacy": {"hashColumns": ["email"], "saltSecretRef": {"name": "salt", "key": "value"}},
            "resources": {"workers": 3, "memory": "8Gi"},
        }
    )
    config = prep_config("people", spec, "s3://bucket/datasets/people")
    text = config.model_dump_json(by_alias=True)
    assert "s3-creds" not in text and "saltSecretRef" not in text and "8Gi" not in text
    assert config.workers == 3
    assert config.spec.source.uri == "s3://bucket/raw/"
    assert config.spec.privacy.hash_columns == ["email"]
    assert config.output_uri == "s3://bucket/datasets/people"


class Job(BaseModel):
    artifact: str
    fail: str = ""


def job_runner(config: Job) -> dict[str, Any]:
    def work(progress: workload.Progress) -> dict[str, Any]:
        if config.fail == "data":
            raise workload.WorkloadError("LabelNotFound", "label 'y' is not a column")
        if config.fail == "machine":
            raise ConnectionResetError("the store went away")
        return {"rows": {"total": 1}}

    return workload.run(config.artifact, config, work)


def test_a_failure_no_retry_mends_exits_0_so_kuberay_does_not_retry_it_and_an_unexpected_one_exits_1(
    tmp_path: Path,
) -> None:
    """KubeRay retries a RayJob whose entrypoint exits non-zero: only a failure a retry may mend does that."""
    codes = {}
    for fail in ("", "data", "machine"):
        artifact = tmp_path / (fail or "ok")
        path = tmp_path / f"{fail or 'ok'}.json"
        path.write_text(Job(artifact=artifact.as_uri(), fail=fail).model_dump_json())
        codes[fail] = workload.main(str(path), Job, job_runner, lambda config: config.artifact)
        result = json.loads((artifact / "result.json").read_text())
        assert result.get("retryable") == {"": None, "data": False, "machine": True}[fail], result
    assert codes == {"": 0, "data": 0, "machine": 1}
    assert (tmp_path / "data" / "logs" / "driver.log").exists()  # kept with its artifacts (what is in it: below)


def test_a_failure_once_the_pod_is_being_deleted_writes_no_result_and_the_work_is_armed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preempted run's driver sees its workers go (their pods stop Ray once checkpointed): that is the deletion,
    not a failure of the run. No Failed result is written (the run resumes when Kueue admits it again); the driver
    waits to be killed. While it works, its armed file keeps the preStop hook waiting for the workers."""
    stop = tmp_path / "stop"
    monkeypatch.setenv("SLIPWAY_STOP_FILE", str(stop))
    held: list[str] = []

    def hold(self: StopRequest, seconds: float | None = None) -> None:
        held.append(str(self.path))
        raise SystemExit(143)  # killed, as the pod's end would

    monkeypatch.setattr(StopRequest, "hold", hold)
    artifact = tmp_path / "run"

    def work(progress: workload.Progress) -> dict[str, Any]:
        assert list(tmp_path.glob("stop.armed.*")), "the hook would not wait for this work"
        stop.touch()  # the hook ran: the pod is being deleted
        raise ConnectionResetError("a worker's node died")

    with pytest.raises(SystemExit):
        workload.run(artifact.as_uri(), Job(artifact=artifact.as_uri()), work)
    assert held == [str(stop)]
    assert not (artifact / "result.json").exists()
    assert not list(tmp_path.glob("stop.armed.*"))  # disarmed on the way out

    stop.unlink()  # the same failure with no deletion under way is the run's own, and says so

    def lost(progress: workload.Progress) -> dict[str, Any]:
        raise ConnectionResetError("a worker's node died")

    result = workload.run(artifact.as_uri(), Job(artifact=artifact.as_uri()), lost)
    assert result["status"] == "Failed" and "a worker's node died" in result["message"], result
    assert json.loads((artifact / "result.json").read_text())["status"] == "Failed"


def test_the_log_is_copied_while_the_work_goes_and_the_processs_own_output_is_unchanged(tmp_path: Path) -> None:
    """A real child process writes to its stdout and stderr under a LogShipper: the copy in the store grows while
    it runs (read before it ends), and the process's own stdout and stderr get every line as before."""
    script = f"""
import sys, time
sys.path[:0] = {sys.path!r}
from slipway_trainer.logship import LogShipper
with LogShipper({(tmp_path / "logs" / "driver.log").as_uri()!r}, interval=0.2):
    print("epoch 1 of 2", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    time.sleep(3)
    print("epoch 2 of 2", flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    copy = tmp_path / "logs" / "driver.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (copy.exists() and "a warning" in copy.read_text()):
        time.sleep(0.1)
    assert child.poll() is None, "the copy must be there while the process still runs"
    assert "epoch 1 of 2" in copy.read_text() and "epoch 2" not in copy.read_text()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out == "epoch 1 of 2\nepoch 2 of 2\n" and err == "a warning\n"
    lines = copy.read_text().splitlines()  # stdout and stderr are read apart: lines written together may swap
    assert sorted(lines[:2]) == ["a warning", "epoch 1 of 2"] and lines[2:] == ["epoch 2 of 2"]


def test_a_flooding_log_is_kept_as_its_last_part_with_what_came_before_counted(tmp_path: Path) -> None:
    """The copy keeps the last LIMIT_BYTES (here 100) and says how many bytes came before it; the local file the
    copy is made from never holds much more than twice that, so a chatty workload does not fill its pod's disk."""
    copy = tmp_path / "logs" / "driver.log"
    script = f"""
import sys, time
sys.path[:0] = {sys.path!r}
from slipway_trainer import logship
logship.LIMIT_BYTES = 100
with logship.LogShipper({copy.as_uri()!r}, interval=60) as shipper:
    for i in range(60):
        print(f"line {{i:04d}}", flush=True)  # 10 bytes a line
        if i % 7 == 0:
            shipper.ship()
    time.sleep(0.5)  # the tee has written every line
    shipper.ship()
    assert shipper.path.stat().st_size <= 2 * logship.LIMIT_BYTES, shipper.path.stat().st_size
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dropped, body = window(copy.read_bytes())
    assert len(body) == 100 and body.endswith(b"line 0059\n") and dropped == 600 - 100, (dropped, body)
    assert body.decode().splitlines()[0] == "line 0050"
