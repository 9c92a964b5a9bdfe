"""The operator (Kopf, kubernetes backend) on the real control plane: children, dependencies, status from the
RayJob and the workload's result, and no duplicates after a restart. KubeRay's CRDs are installed but not its
controller, so the test plays KubeRay's part by writing the RayJob's status, and the workload's by writing
result.json to the artifact store."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import testbed
from kopf.testing import KopfRunner

from slipway_operator.builders import job_config

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def operator_env(
    kuberay_crds: testbed.ControlPlane,
    slipway_crds: testbed.ControlPlane,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    store = tmp_path / "store"
    monkeypatch.setenv("KUBECONFIG", str(kuberay_crds.kubeconfig))
    monkeypatch.setenv("SLIPWAY_STORE", store.as_uri())
    monkeypatch.setenv("SLIPWAY_IMAGE", "slipway/trainer:test")
    monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")
    return store


def get(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out else None


def play_kuberay(plane: testbed.ControlPlane, namespace: str, name: str, deployment: str, job: str) -> None:
    """Write a RayJob's status as KubeRay's controller would (it is not running in the test bed)."""
    status = {"status": {"jobDeploymentStatus": deployment, "jobStatus": job}}
    plane.kubectl(
        "patch", "rayjob", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def runner(namespace: str) -> KopfRunner:
    return KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"], timeout=120)


def test_the_operator_drives_data_prep_then_training_adopts_after_a_restart_and_leaves_no_finalizer(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: Path
) -> None:
    plane = control_plane
    with runner(namespace):
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist" / "01-datasetprep.yaml"))
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml"))
        testbed.wait_until("the prep RayJob", lambda: get(plane, "rayjob", "fashion-prep", namespace), 60)
        prep = get(plane, "datasetprep", "fashion", namespace)
        job = get(plane, "rayjob", "fashion-prep", namespace)
        assert prep is not None and job is not None
        output = f"{operator_env.as_uri()}/datasets/{namespace}/fashion"
        assert json.loads(job_config(job) or "")["outputUri"] == output  # the config rides on the Ray pods
        assert job["metadata"]["ownerReferences"][0]["uid"] == prep["metadata"]["uid"]

        def phase(kind: str, name: str) -> str:
            return str(((get(plane, kind, name, namespace) or {}).get("status") or {}).get("phase"))

        testbed.wait_until(
            "the TrainingRun to wait for its dataset", lambda: phase("trainingrun", "fashion-cnn") == "Waiting", 60
        )
        run = get(plane, "trainingrun", "fashion-cnn", namespace) or {}
        ready = next(c for c in run["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "WaitingForDependency" and "DatasetPrep fashion" in ready["message"]
        assert get(plane, "rayjob", "fashion-cnn-train", namespace) is None

        # KubeRay's part: the job runs; the workload's part: progress, then a result in the store.
        play_kuberay(plane, namespace, "fashion-prep", "Running", "RUNNING")
        run_dir = Path(output.removeprefix("file://")) / "_run"
        run_dir.mkdir(parents=True)
        (run_dir / "progress.json").write_text(json.dumps({"phase": "Reading", "rowsRead": 35000}))
        testbed.wait_until("the prep to run", lambda: phase("datasetprep", "fashion") == "Running", 60)
        assert (get(plane, "datasetprep", "fashion", namespace) or {})["status"]["progress"] == "35,000 rows"
        (run_dir / "result.json").write_text(
            json.dumps(
                {
                    "status": "Succeeded",
                    "fingerprint": "sha256:abc",
                    "manifestUri": f"{output}/manifest.json",
                    "rows": {"train": 56000, "validation": 7000, "test": 7000, "total": 70000},
                    "droppedRows": {},
                }
            )
        )
        play_kuberay(plane, namespace, "fashion-prep", "Complete", "SUCCEEDED")
        testbed.wait_until("the prep to succeed", lambda: phase("datasetprep", "fashion") == "Succeeded", 60)
        status = (get(plane, "datasetprep", "fashion", namespace) or {})["status"]
        assert status["outputUri"] == output and status["rows"]["total"] == 70000
        assert status["fingerprint"] == "sha256:abc"
        table = plane.kubectl("get", "datasetprep", "fashion", "-n", namespace)
        assert "Succeeded" in table and "70000" in table

        testbed.wait_until("the training RayJob", lambda: get(plane, "rayjob", "fashion-cnn-train", namespace), 60)
        train_config = json.loads(job_config(get(plane, "rayjob", "fashion-cnn-train", namespace) or {}) or "")
        assert train_config["datasetUri"] == output

    # A restarted operator finds what it made: no second RayJob appears, and a run makes no ConfigMap.
    with runner(namespace):
        testbed.wait_until(
            "a pass of the restarted operator",
            lambda: phase("trainingrun", "fashion-cnn") in ("Pending", "Running"),
            60,
        )
    names = plane.kubectl(
        "get", "rayjobs,configmaps", "-n", namespace, "-l", "app.kubernetes.io/managed-by=slipway", "-o", "name"
    ).split()
    assert sorted(names) == sorted(
        [
            "rayjob.ray.io/fashion-prep",
            "rayjob.ray.io/fashion-cnn-train",
        ]
    )
    # The operator wrote nothing to the resources but their status: no finalizer, no annotation of Kopf's. So a run
    # deleted while no operator runs goes at once (its children with it, by their ownerReferences).
    for kind, name in (("datasetprep", "fashion"), ("trainingrun", "fashion-cnn")):
        meta = (get(plane, kind, name, namespace) or {})["metadata"]
        assert not meta.get("finalizers"), meta
        assert not [a for a in meta.get("annotations") or {} if "kopf" in a], meta["annotations"]
    plane.kubectl("delete", "trainingrun", "fashion-cnn", "-n", namespace, "--wait=true", "--timeout=30s")
    assert get(plane, "trainingrun", "fashion-cnn", namespace) is None


class Requests:
    """The requests the operator's API client sends (the operator runs in this process under KopfRunner): a spy on
    the client's `RESTClientObject.request` that records and passes each on unchanged. Kopf's own watches and
    patches go through its own client, not this one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from kubernetes.client import rest

        self.sent: list[tuple[str, str]] = []
        original = rest.RESTClientObject.request

        def request(client: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.sent.append((method, url))
            return original(client, method, url, *args, **kwargs)

        monkeypatch.setattr(rest.RESTClientObject, "request", request)

    def to(self, *parts: str) -> list[tuple[str, str]]:
        return [(method, url) for method, url in self.sent if any(f"/{part}" in url for part in parts)]


class Connects:
    """How many connections the process's API clients open: a spy on urllib3's `HTTPSConnection.connect`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from urllib3.connection import HTTPSConnection

        self.count = 0
        original = HTTPSConnection.connect

        def connect(connection: Any) -> None:
            self.count += 1
            original(connection)

        monkeypatch.setattr(HTTPSConnection, "connect", connect)


def test_a_running_job_is_watched_not_fetched_on_every_tick(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator keeps its RayJobs and pods in a watch's indexes: while a run's job runs and nothing changes, the
    passes of its 10 s resync read them from there, with no GET of the RayJob and no LIST of pods (before: one GET
    and two LISTs per run per tick); a change to the job still reaches the run's status within a pass. A new run's
    first pass does not look for its RayJob with a GET either (the watch's index already says it is not there), nor
    does a run's first pass after it waited for its DatasetPrep."""
    plane = control_plane
    spy = Requests(monkeypatch)
    with runner(namespace):
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "auto-mpg" / "01-datasetprep.yaml"))
        testbed.wait_until("the prep RayJob", lambda: get(plane, "rayjob", "mpg-prep", namespace), 60)
        made = spy.to("rayjobs")
        assert [method for method, _ in made] == ["POST"], made  # created with one POST, never looked for
        play_kuberay(plane, namespace, "mpg-prep", "Running", "RUNNING")

        def phase() -> str:
            return str(((get(plane, "datasetprep", "mpg", namespace) or {}).get("status") or {}).get("phase"))

        testbed.wait_until("the prep to run", lambda: phase() == "Running", 60)
        spy.sent.clear()
        time.sleep(25)  # two of the run's resync passes, at least
        assert spy.to("rayjobs", "pods", "events") == []

        # A run that waited for its DatasetPrep (phase Waiting: no children made) does not look for its RayJob either.
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "auto-mpg" / "02-trainingrun.yaml"))

        def run_phase() -> str:
            return str(((get(plane, "trainingrun", "mpg-mlp", namespace) or {}).get("status") or {}).get("phase"))

        testbed.wait_until("the run to wait for its DatasetPrep", lambda: run_phase() == "Waiting", 60)
        output = Path(f"{operator_env}/datasets/{namespace}/mpg/_run")
        output.mkdir(parents=True)
        done = {"status": "Succeeded", "fingerprint": "sha256:1", "version": "v1", "rows": {"total": 398}}
        (output / "result.json").write_text(json.dumps(done))
        play_kuberay(plane, namespace, "mpg-prep", "Complete", "SUCCEEDED")
        testbed.wait_until("the change seen through the watch", lambda: phase() == "Succeeded", 60)
        testbed.wait_until("the run's RayJob", lambda: get(plane, "rayjob", "mpg-mlp-train", namespace), 60)
        made = spy.to("rayjobs")
        assert [method for method, _ in made] == ["POST"], made
        assert spy.to("configmaps") == []  # a run's config rides on its RayJob's pods: no ConfigMap to make


def test_slipway_operator_command_reconciles_a_namespace(
    kuberay_crds: testbed.ControlPlane, slipway_crds: testbed.ControlPlane, namespace: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    plane = kuberay_crds
    slipway = Path(sys.executable).parent / "slipway"
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    process = subprocess.Popen(
        [
            str(slipway),
            "operator",
            "--namespace",
            namespace,
            "--store",
            (tmp_path / "store").as_uri(),
            "--image",
            "slipway/trainer:cli",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "auto-mpg" / "01-datasetprep.yaml"))
        testbed.wait_until(
            "the RayJob made by `slipway operator`", lambda: get(plane, "rayjob", "mpg-prep", namespace), 90
        )
        job = get(plane, "rayjob", "mpg-prep", namespace) or {}
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["image"] == "slipway/trainer:cli"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]


def _warning(namespace: str, kind: str, name: str, reason: str, message: str, type_: str = "Warning") -> str:
    """An Event as a controller would post it about `kind` `name`."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Event", "type": type_, "reason": reason, "message": message,
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": kind, "name": name, "namespace": namespace},
        "firstTimestamp": "2026-12-07T00:00:00Z", "lastTimestamp": "2026-12-07T00:00:00Z", "count": 1,
        "source": {"component": "test"},
    })  # fmt: skip


def test_pod_less_runs_share_one_look_at_their_namespaces_warning_events(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs whose jobs have no pod yet read their RayCluster's and submitter's Warning Events from one list of the
    namespace's Warnings (one request for all of them, not one per run per look), made again after 30 s when a
    run asks about a name it had not asked about, else ever less often while it says nothing new about the names
    asked, and back to 30 s when it does. The clock is the test's; the API server and its Events are real."""
    from slipway_operator.backends import kubernetes as backend_module

    plane, spy = control_plane, Requests(monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(backend_module.time, "monotonic", lambda: clock[0])
    backend = backend_module.KubernetesBackend(backend_module.KubernetesApi())
    for event in (
        _warning(namespace, "RayCluster", "a-cluster", "FailedCreate", "exceeded quota: a"),
        _warning(namespace, "Job", "b-job", "FailedCreate", "denied by policy b"),
        _warning(namespace, "RayCluster", "a-cluster", "Created", "created head pod", type_="Normal"),
        _warning(namespace, "Job", "other-job", "BackoffLimitExceeded", "not a run of ours"),
    ):
        plane.kubectl("create", "-f", "-", input=event)

    def look(*names: str, at: float) -> list[str]:
        clock[0] = 1000.0 + at
        return sorted(str(e["message"]) for e in backend.warnings(namespace, list(names)))

    def lists() -> int:  # the client's first request also reads the API's discovery (/apis/events.k8s.io/v1)
        return len([m for m, url in spy.to(f"namespaces/{namespace}/events") if m == "GET"])

    assert look("a-cluster", "a-job", at=0) == ["exceeded quota: a"]  # its Warning only, not its Normal Event
    assert lists() == 1
    assert look("b-cluster", "b-job", at=1) == ["denied by policy b"]  # a second run: the same list
    assert look("a-cluster", "a-job", at=20) == ["exceeded quota: a"]
    assert lists() == 1
    look("a-cluster", "a-job", at=31)  # 30 s on: the first look for the second run's names
    assert lists() == 2
    look("b-cluster", "b-job", at=61)  # then 30 s again, as for a run's first look
    assert lists() == 3
    look("a-cluster", "a-job", at=91)  # nothing new: the next wait is 60 s
    assert lists() == 3
    look("a-cluster", "a-job", at=121)
    assert lists() == 4  # and then 120 s
    plane.kubectl("create", "-f", "-", input=_warning(namespace, "Job", "b-job", "FailedCreate", "quota b now"))
    assert look("b-cluster", "b-job", at=200) == ["denied by policy b"]  # not listed again before its wait
    assert look("b-cluster", "b-job", at=241) == ["denied by policy b", "quota b now"]
    assert lists() == 5
    look("a-cluster", "a-job", at=271)  # something new was said: back to 30 s
    assert lists() == 6
    listed = [url for m, url in spy.to(f"namespaces/{namespace}/events") if m == "GET"]
    assert listed and all("fieldSelector=type%3DWarning" in url for url in listed)


def test_a_new_runs_rayjob_is_created_with_one_post_and_a_later_apply_still_removes_what_it_leaves_out(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's RayJob that the watch has not seen is created with one POST (cheaper for the API server than an
    apply that creates, when hundreds of runs arrive at once). Its fields are then owned by an Update of manager
    `slipway`, which an apply would keep even where the applied object leaves them out; the backend turns that
    into Slipway's Apply first, so a re-apply without the held annotation and the deadline removes both. A POST that
    finds the RayJob there after all (the watch was behind) applies instead. KubeRay's status writes between the
    adoption's read and its patch make it read again; it never writes over them."""
    from slipway_operator.backends import kubernetes as backend_module
    from slipway_operator.controllers import trainingrun
    from slipway_operator.controllers.common import Settings, stamp

    plane, spy = control_plane, Requests(monkeypatch)
    manifest = (EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml").read_text()
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    run = get(plane, "trainingrun", "fashion-cnn", namespace)
    assert run is not None
    run["spec"]["dataset"] = {"uri": "s3://data/fashion"}
    settings = Settings(image="slipway/trainer:test", store_uri="s3://store", storage_secret=None)
    job = stamp(trainingrun.desired_children(run, None, settings).children)[0]
    assert job["kind"] == "RayJob"
    name = job["metadata"]["name"]
    job["metadata"]["annotations"]["slipway.dev/held"] = "true"
    assert job["spec"]["activeDeadlineSeconds"]
    connects = Connects(monkeypatch)
    backend = backend_module.KubernetesBackend(backend_module.KubernetesApi())  # reads the API's discovery

    def managers() -> list[tuple[str, str]]:
        found = json.loads(plane.kubectl("get", "rayjob", name, "-n", namespace, "-o", "json", "--show-managed-fields"))
        return sorted((e["manager"], e["operation"]) for e in found["metadata"]["managedFields"])

    backend.apply([job], absent=True)
    assert [m for m, _ in spy.to("rayjobs")] == ["POST"]
    assert managers() == [("slipway", "Update")]

    again = copy.deepcopy(job)
    del again["metadata"]["annotations"]["slipway.dev/held"]
    del again["spec"]["activeDeadlineSeconds"]
    spy.sent.clear()
    reads, real_get = [], backend.api.get

    def get_then_kuberay_writes(*args: Any) -> dict[str, Any] | None:
        found = real_get(*args)
        reads.append(args)
        if len(reads) == 2:  # the adoption's read, then KubeRay's status write: the adoption must read again
            play_kuberay(plane, namespace, name, "Initializing", "PENDING")
        return found

    monkeypatch.setattr(backend.api, "get", get_then_kuberay_writes)
    backend.apply([again])  # not indexed here: the backend GETs it to see who manages it
    methods = [m for m, _ in spy.to("rayjobs")]
    assert methods == ["GET", "GET", "PATCH", "GET", "PATCH", "PATCH"]  # look, read, adopt (refused), again, apply
    found = get(plane, "rayjob", name, namespace) or {}
    assert "slipway.dev/held" not in found["metadata"]["annotations"]
    assert "activeDeadlineSeconds" not in found["spec"]
    assert found["spec"]["entrypoint"] == job["spec"]["entrypoint"]  # what it still applies stays
    assert found["status"]["jobDeploymentStatus"] == "Initializing"
    assert managers() == [("kubectl-patch", "Update"), ("slipway", "Apply")]  # KubeRay's part (kubectl's here) kept

    spy.sent.clear()
    backend.apply([again], absent=True)  # a watch that was behind: the POST finds it there, and it is applied
    assert [m for m, _ in spy.to("rayjobs")] == ["POST", "GET", "PATCH"]
    assert managers() == [("kubectl-patch", "Update"), ("slipway", "Apply")]

    # Answers nothing reads (a POST, an apply, a status patch, an Event) still give their connection back: all the
    # requests above and these two went over one TLS connection (opened by the first request, or the discovery).
    backend.api.patch_status("slipway.dev/v1alpha1", "TrainingRun", namespace, "fashion-cnn", {"phase": "Pending"})
    backend.api.create(json.loads(_warning(namespace, "TrainingRun", "fashion-cnn", "Testing", "one connection")))
    assert connects.count == 1


def test_a_child_refused_by_a_quota_stalls_the_run_with_the_api_servers_words_until_the_quota_allows_it(
    control_plane: testbed.ControlPlane, namespace: str, operator_env: Path
) -> None:
    plane = control_plane
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-rayjobs", "namespace": namespace},
        "spec": {"hard": {"count/rayjobs.ray.io": "0"}},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(quota))

    def stalled() -> dict[str, Any] | None:
        status = (get(plane, "datasetprep", "fashion", namespace) or {}).get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "Stalled" and c["status"] == "True"]
        return found[0] if found else None

    with runner(namespace):
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist" / "01-datasetprep.yaml"))
        testbed.wait_until("the prep to stall", stalled, 60)
        condition = stalled() or {}
        assert condition["reason"] == "QuotaExceeded", condition
        assert "refused RayJob fashion-prep (HTTP 403)" in condition["message"]
        # "exceeded quota: no-rayjobs" once the quota controller has counted RayJobs, "status unknown for quota:
        # no-rayjobs" before: the API server's own words either way, with where to look
        assert "is forbidden" in condition["message"] and "quota: no-rayjobs" in condition["message"]
        assert "ResourceQuota" in condition["message"]
        events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=ApplyFailed")
        assert "fashion-prep" in events

        plane.kubectl("delete", "resourcequota", "no-rayjobs", "-n", namespace)
        testbed.wait_until(
            "the RayJob once the quota is gone", lambda: get(plane, "rayjob", "fashion-prep", namespace), 90
        )
        testbed.wait_until("the Stalled condition to clear", lambda: stalled() is None, 60)
