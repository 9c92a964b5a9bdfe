"""One reconcile pass, driven as the operator and `slipway run` drive it, with the resources in the real local store
(`LocalStore`), artifacts in a real folder, and a backend that records what it is asked to do (a RayJob's status is
what a test says KubeRay wrote). The tier between the pure controllers and the real control plane: milliseconds."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest

from slipway_operator.backends import ApplyRefused
from slipway_operator.builders import job_config
from slipway_operator.controllers.common import CONFIG_HASH, Settings
from slipway_operator.localstore import LocalStore
from slipway_operator.reconcile import Outcome, Runtime, reconcile, stop_children, typed
from slipway_trainer import storage

API = "slipway.dev/v1alpha1"
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
DONE = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
Key = tuple[str, str]


class RecordingBackend:
    """Keeps what it is given, as an API server would, and records every apply and delete; nothing runs."""

    name = "recording"

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.applied: list[list[Key]] = []
        self.deleted: list[Key] = []
        self.refusing: str | None = None  # what the API server says when it refuses every apply
        self.pod_list: dict[str, list[dict[str, Any]]] = {}  # label selector -> the pods the kubelet reports
        self.selectors: list[str] = []

    def missing_prerequisite(self) -> str | None:
        return None

    def apply(self, children: list[dict[str, Any]], absent: bool = False) -> None:
        if self.refusing:
            raise ApplyRefused(self.refusing)
        self.applied.append([(c["kind"], c["metadata"]["name"]) for c in children])
        for child in children:
            key = (child["kind"], child["metadata"]["name"])
            status = (self.objects.get(key) or {}).get("status")
            self.objects[key] = {**copy.deepcopy(child), **({"status": status} if status else {})}

    def observe(self, child: dict[str, Any], new: bool = False) -> dict[str, Any] | None:
        found = self.objects.get((child["kind"], child["metadata"]["name"]))
        return copy.deepcopy(found) if found is not None else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))
        self.objects.pop((kind, name), None)

    def endpoint(self, service: dict[str, Any]) -> str | None:
        return None

    def grpc_endpoint(self, service: dict[str, Any]) -> str | None:
        return None

    def scrape(self, deployment: dict[str, Any], path: str) -> tuple[list[str], str | None]:
        return [], None

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.selectors.append(selector)
        return copy.deepcopy(self.pod_list.get(selector, []))

    def warnings(self, namespace: str, names: list[str]) -> list[dict[str, Any]]:
        return []

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        return "ValueError: the model file is not there\n"

    def close(self) -> None:
        pass

    def job_status(self, name: str, status: dict[str, Any]) -> None:
        """What KubeRay would write into the RayJob's status."""
        self.objects["RayJob", name]["status"] = status


class Bed:
    def __init__(self, root: Path) -> None:
        self.store = LocalStore(root / "state")
        self.backend = RecordingBackend()
        self.artifacts = root / "artifacts"
        settings = Settings(image="slipway/trainer:test", store_uri=self.artifacts.as_uri(), strict_status=True)
        self.runtime = Runtime(settings, self.store, self.backend)

    def add(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        obj, _ = self.store.upsert({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
        return obj

    def step(self, kind: str, name: str) -> dict[str, Any] | None:
        """One pass, applied as `slipway run` applies it; the outcome's status (None: the pass did nothing)."""
        obj = self.store.objects[kind, name]
        outcome = reconcile(copy.deepcopy(obj), self.runtime)
        if outcome is None:
            return None
        self.store.update_status(obj, outcome.status)
        return outcome.status

    def write(self, folder: str, name: str, file: str, doc: dict[str, Any]) -> None:
        storage.write_json_atomic(storage.join(self.artifacts.as_uri(), folder, "default", name, file), doc)


PREP = {"source": {"uri": "builtin://sklearn/wine"}, "split": {"stratifyBy": "target"}}
RUN = {
    "dataset": {"ref": "wine"},
    "model": {"architecture": "mlp"},
    "objective": {"metric": "mae", "direction": "minimize", "loss": "huber"},
    "training": {"epochs": 3},
}


@pytest.fixture
def bed(tmp_path: Path) -> Bed:
    return Bed(tmp_path)


def test_a_run_waits_for_its_dataset_then_starts_once_and_a_pass_that_changes_nothing_sends_nothing(bed: Bed) -> None:
    bed.add("TrainingRun", "mpg", RUN)
    waiting = bed.step("TrainingRun", "mpg")
    assert waiting is not None and waiting["phase"] == "Waiting" and bed.backend.applied == []
    assert "DatasetPrep wine (it does not exist yet)" in waiting["message"]

    bed.add("DatasetPrep", "wine", PREP)
    bed.step("DatasetPrep", "wine")
    assert bed.backend.applied == [[("RayJob", "wine-prep")]]
    bed.backend.job_status("wine-prep", DONE)
    bed.write("datasets", "wine", "_run/result.json", {"status": "Succeeded", "rows": {"total": 178}})
    prep = bed.step("DatasetPrep", "wine")
    assert prep is not None and prep["phase"] == "Succeeded"
    assert prep["outputUri"] == f"{bed.artifacts.as_uri()}/datasets/default/wine"

    started = bed.step("TrainingRun", "mpg")
    assert started is not None and started["rayJobName"] == "mpg-train" and "startTime" not in started
    assert bed.backend.applied[-1] == [("RayJob", "mpg-train")]
    for _ in range(3):  # nothing changed: nothing is applied again
        bed.step("TrainingRun", "mpg")
    assert len(bed.backend.applied) == 2


def test_a_finished_run_keeps_its_times_and_key_metric_and_a_resync_of_it_is_a_no_op(bed: Bed) -> None:
    bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    bed.step("TrainingRun", "mpg")
    bed.backend.job_status("mpg-train", RUNNING)
    bed.write("runs", "mpg", "progress.json", {"phase": "Training", "epoch": 1, "totalEpochs": 3})
    running = bed.step("TrainingRun", "mpg")
    assert running is not None and running["phase"] == "Running" and running["progress"] == "epoch 1/3"
    started = running["startTime"]

    bed.backend.job_status("mpg-train", DONE)
    metrics = {"test_mse": 9.5, "test_mae": 2.31, "test_r2": 0.8}  # the objective's metric is not the first
    bed.write("runs", "mpg", "result.json", {"status": "Succeeded", "metrics": metrics, "modelUri": "file:///m"})
    done = bed.step("TrainingRun", "mpg")
    assert done is not None and done["phase"] == "Succeeded"
    assert done["keyMetric"] == "test_mae=2.31" and done["startTime"] == started
    assert done["startTime"] <= done["completionTime"]

    assert bed.step("TrainingRun", "mpg") is None  # finished and unchanged: the pass reads nothing, writes nothing
    assert len(bed.backend.applied) == 1


def test_a_run_re_created_under_an_old_name_is_not_finished_by_the_result_its_predecessor_left(bed: Bed) -> None:
    """A TrainingRun deleted and applied again (another spec, the same name) finds the old run's progress.json and
    result.json in its artifact folder: written before it existed, they are not its own, so it starts and runs."""
    bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    long_ago = "2026-01-01T00:00:00+00:00"
    bed.write("runs", "mpg", "progress.json", {"phase": "Succeeded", "epoch": 15, "totalEpochs": 15,
                                               "startedAt": long_ago, "updatedAt": long_ago})  # fmt: skip
    old = {"status": "Succeeded", "metrics": {"test_mae": 9.0}, "modelUri": "file:///old", "finishedAt": long_ago}
    bed.write("runs", "mpg", "result.json", old)
    started = bed.step("TrainingRun", "mpg")
    assert started is not None and started["phase"] == "Pending" and "metrics" not in started, started
    bed.backend.job_status("mpg-train", RUNNING)
    running = bed.step("TrainingRun", "mpg")
    assert running is not None and running["phase"] == "Running" and not running.get("progress"), running
    assert running["message"] == "running"  # not the old run's "epoch 15/15"

    # The same config run again hands out the old result, stamped now: that one is this run's.
    bed.write("runs", "mpg", "result.json", old | {"reusedAt": datetime.datetime.now(datetime.UTC).isoformat()})
    bed.backend.job_status("mpg-train", DONE)
    done = bed.step("TrainingRun", "mpg")
    assert done is not None and done["phase"] == "Succeeded" and done["modelUri"] == "file:///old", done


def test_a_run_that_waits_for_its_ray_cluster_or_a_queue_costs_the_store_no_read(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of runs may wait (Kueue holds them, their pods wait for GPU nodes): their passes read neither
    progress.json nor result.json until the RayJob's entrypoint may have written them; from then on, every pass
    reads, also while the run is suspended and resumed."""
    reads: list[str] = []
    read_json = storage.read_json
    monkeypatch.setattr(storage, "read_json", lambda uri: reads.append(uri.rsplit("/", 1)[-1]) or read_json(uri))
    bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    assert (bed.step("TrainingRun", "mpg") or {})["phase"] == "Pending"
    for waiting in ({}, {"jobDeploymentStatus": "Suspended"}, {"jobDeploymentStatus": "Initializing"}):
        bed.backend.job_status("mpg-train", waiting)
        assert (bed.step("TrainingRun", "mpg") or {}).get("phase") != "Running", waiting
    assert reads == []

    bed.backend.job_status("mpg-train", RUNNING)
    bed.write("runs", "mpg", "progress.json", {"phase": "Training", "epoch": 1, "totalEpochs": 3})
    running = bed.step("TrainingRun", "mpg")
    assert running is not None and running["progress"] == "epoch 1/3"
    assert reads == ["progress.json", "result.json"]
    bed.backend.job_status("mpg-train", {"jobDeploymentStatus": "Initializing"})  # resumed: its cluster starts again
    bed.step("TrainingRun", "mpg")
    assert reads[2:] == ["progress.json", "result.json"]
    assert bed.store.objects["TrainingRun", "mpg"]["status"]["progress"] == "epoch 1/3"


def test_a_spec_changed_after_the_run_started_is_refused_with_the_field_and_the_running_job_is_left_alone(
    bed: Bed,
) -> None:
    obj = bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    bed.step("TrainingRun", "mpg")
    bed.backend.job_status("mpg-train", RUNNING)
    before = copy.deepcopy(bed.backend.objects["RayJob", "mpg-train"])

    changed = copy.deepcopy(obj["spec"])
    changed["training"]["epochs"] = 30
    bed.store.upsert({"apiVersion": API, "kind": "TrainingRun", "metadata": {"name": "mpg"}, "spec": changed})
    refused = bed.step("TrainingRun", "mpg")
    assert refused is not None and refused["phase"] == "Invalid"
    assert "the spec changed after the run started (training.epochs)" in refused["message"]
    assert bed.backend.objects["RayJob", "mpg-train"] == before  # not re-applied, not restarted
    assert len(bed.backend.applied) == 1
    annotations = bed.backend.objects["RayJob", "mpg-train"]["metadata"]["annotations"]
    assert annotations[CONFIG_HASH] == before["metadata"]["annotations"][CONFIG_HASH]


def test_deleting_a_resource_stops_the_children_its_kind_owns(bed: Bed) -> None:
    run = bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    serving = bed.add("ModelDeployment", "mpg", {"model": {"fromTrainingRun": "mpg"}})
    stop_children(run, bed.runtime)
    stop_children(serving, bed.runtime)
    assert bed.backend.deleted == [
        ("RayJob", "mpg-train"),
        ("HorizontalPodAutoscaler", "mpg-stable"),
        ("Deployment", "mpg-stable"),
        ("Deployment", "mpg-canary"),
        ("Deployment", "mpg-shadow"),
        ("Service", "mpg"),
        ("Service", "mpg-peers"),
        ("Service", "mpg-shadow"),
    ]


def test_a_deployment_waits_for_its_run_and_names_it(bed: Bed) -> None:
    bed.add("ModelDeployment", "mpg", {"model": {"fromTrainingRun": "mpg"}})
    waiting = bed.step("ModelDeployment", "mpg")
    assert waiting is not None and "TrainingRun mpg (it does not exist yet)" in waiting["message"]
    assert bed.backend.applied == []


QUOTA = "the API server refused RayJob mpg-train (HTTP 403): exceeded quota: team, requested: count/rayjobs.ray.io=1"


def test_a_child_the_cluster_refuses_stalls_the_run_with_the_api_servers_words_and_the_next_pass_applies_it(
    bed: Bed,
) -> None:
    bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"}})
    bed.backend.refusing = QUOTA
    refused = bed.step("TrainingRun", "mpg")
    assert refused is not None and refused["phase"] == "Pending" and refused["message"] == QUOTA
    stalled = {c["type"]: c for c in refused["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "QuotaExceeded")
    assert bed.backend.applied == []
    obj = bed.store.objects["TrainingRun", "mpg"]
    again = reconcile(copy.deepcopy(obj), bed.runtime)  # still refused: the Event was posted once, not per pass
    assert again is not None and again.status["message"] == QUOTA
    assert not [e for e in again.events if e[1] == "ApplyFailed"]

    bed.backend.refusing = None  # the quota was raised: level-triggered, the next pass applies the children
    started = bed.step("TrainingRun", "mpg")
    assert started is not None and started["phase"] == "Pending"
    assert {c["type"]: c for c in started["conditions"]}["Stalled"]["status"] == "False"
    assert bed.backend.applied == [[("RayJob", "mpg-train")]]


def test_a_deployment_whose_children_are_refused_says_so_in_a_stalled_condition_and_an_event(bed: Bed) -> None:
    bed.add("ModelDeployment", "mpg", {"model": {"uri": "file:///models/mpg"}})
    bed.backend.refusing = "the API server refused Deployment mpg-stable (HTTP 403): forbidden"
    obj = bed.store.objects["ModelDeployment", "mpg"]
    outcome = reconcile(copy.deepcopy(obj), bed.runtime)
    assert outcome is not None and outcome.status["message"] == bed.backend.refusing
    stalled = [c for c in outcome.status["conditions"] if c["type"] == "Stalled"]
    assert [(c["status"], c["reason"]) for c in stalled] == [("True", "ApplyFailed")]
    assert ("Warning", "ApplyFailed", bed.backend.refusing) in outcome.events


def test_a_status_field_the_crd_lacks_fails_in_strict_mode_and_is_dropped_with_the_rest_kept_otherwise() -> None:
    status = {"phase": "Running", "message": "exporting", "notInTheCrd": [4]}
    with pytest.raises(ValueError, match="notInTheCrd"):
        typed("TuningSweep", Outcome(dict(status)), strict=True)
    kept = typed("TuningSweep", Outcome(dict(status))).status
    assert kept == {"phase": "Running", "message": "exporting"}  # what the API server would have kept


def _pod(name: str, created: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"containers": [{"name": container["name"], "image": "slipway/trainer:test"}]},
        "status": {"phase": "Pending", "containerStatuses": [container]},
    }


def test_a_run_whose_image_cannot_be_pulled_fails_after_its_pending_timeout_and_its_rayjob_is_suspended(
    bed: Bed,
) -> None:
    bed.add("TrainingRun", "mpg", {**RUN, "dataset": {"uri": "file:///data/mpg"},
                                   "failurePolicy": {"pendingTimeoutSeconds": 60}})  # fmt: skip
    bed.step("TrainingRun", "mpg")
    bed.backend.job_status("mpg-train", {"jobDeploymentStatus": "Initializing", "rayClusterName": "mpg-train-x"})
    pulling = {"name": "ray-head", "image": "slipway/trainer:test", "restartCount": 0,
               "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}  # fmt: skip
    fresh = datetime.datetime.now(datetime.UTC).isoformat()
    bed.backend.pod_list["slipway.dev/trainingrun=mpg"] = [_pod("mpg-train-x-head", fresh, pulling)]
    waiting = bed.step("TrainingRun", "mpg")
    assert waiting is not None and waiting["phase"] == "Pending", waiting
    stalled = next(c for c in waiting["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ImagePullFailed"
    assert "pod mpg-train-x-head container ray-head cannot pull image 'slipway/trainer:test'" in waiting["message"]
    assert "job-name=mpg-train" in bed.backend.selectors  # the submitter's pods are looked at too

    bed.backend.pod_list["slipway.dev/trainingrun=mpg"] = [_pod("mpg-train-x-head", "2020-01-01T00:00:00Z", pulling)]
    failed = bed.step("TrainingRun", "mpg")
    assert failed is not None and failed["phase"] == "Failed"
    assert next(c for c in failed["conditions"] if c["type"] == "Failed")["reason"] == "ImagePullFailed"
    assert "pendingTimeoutSeconds 60s" in failed["message"]
    assert bed.backend.objects["RayJob", "mpg-train"]["spec"]["suspend"] is True  # its pods are gone, it stays
    assert bed.step("TrainingRun", "mpg") is None  # failed: nothing more until the spec changes


def test_a_deployment_whose_pods_crash_loop_is_not_available_and_says_why(bed: Bed) -> None:
    bed.add("ModelDeployment", "mpg", {"model": {"uri": "file:///models/mpg"}})
    bed.step("ModelDeployment", "mpg")
    deployment = bed.backend.objects["Deployment", "mpg-stable"]
    deployment["status"] = {"readyReplicas": 1, "replicas": 1, "updatedReplicas": 1, "observedGeneration": 1}
    deployment["metadata"]["generation"] = 1
    selector = ",".join(f"{k}={v}" for k, v in sorted(deployment["spec"]["selector"]["matchLabels"].items()))
    crashed = {"name": "server", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                            "finishedAt": "2026-12-01T10:00:00Z"}}}  # fmt: skip
    bed.backend.pod_list[selector] = [_pod("mpg-stable-abc", "2026-12-01T09:00:00Z", crashed)]
    status = bed.step("ModelDeployment", "mpg")
    assert status is not None and status["phase"] != "Available", status
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "False" and available["reason"] == "CrashLoop"
    assert "the model file is not there" in available["message"]  # its last log lines
    assert status["replicas"]["restarts"] == 4
    assert status["replicas"]["lastCrash"] == "mpg-stable-abc/server: Error (exit code 1) at 2026-12-01T10:00:00Z"


def test_an_operator_restarted_with_another_store_does_not_adopt_the_run_as_its_own_and_says_so(bed: Bed) -> None:
    """Found as a new user would: the same names and state, another --store. The run it finds was started
    writing elsewhere: it is neither taken as done (its result is not here) nor left waiting in silence."""
    bed.add("DatasetPrep", "wine", PREP)
    bed.step("DatasetPrep", "wine")
    bed.backend.job_status("wine-prep", DONE)
    other = bed.artifacts.parent / "other-store"
    settings = Settings(image="slipway/trainer:test", store_uri=other.as_uri(), strict_status=True)
    restarted = Runtime(settings, bed.store, bed.backend)
    obj = bed.store.objects["DatasetPrep", "wine"]
    outcome = reconcile(copy.deepcopy(obj), restarted)
    assert outcome is not None and outcome.status["phase"] != "Running", outcome.status
    message = outcome.status["message"]
    assert "started by an operator that writes to another store" in message, message
    assert f"outputUri: {bed.artifacts.as_uri()}/datasets/default/wine -> {other.as_uri()}/datasets/default/wine" in (
        message
    )
    assert len(bed.backend.applied) == 1  # the old job is left as it is


def test_a_job_that_succeeded_without_a_result_where_the_operator_looks_is_stalled_with_the_uri(bed: Bed) -> None:
    bed.add("DatasetPrep", "wine", PREP)
    bed.step("DatasetPrep", "wine")
    bed.backend.job_status("wine-prep", DONE)
    status = bed.step("DatasetPrep", "wine")
    assert status is not None and status["phase"] == "Running"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ResultMissing"
    assert f"{bed.artifacts.as_uri()}/datasets/default/wine/_run/result.json is not there" in status["message"]
    assert status["logUri"] == f"{bed.artifacts.as_uri()}/datasets/default/wine/_run/logs/driver.log"


def _ago(obj: dict[str, Any], seconds: int, *path: str) -> None:
    """Move a recorded time back, as if `seconds` had passed since."""
    target = obj["status"]
    for key in path[:-1]:
        target = target[key]
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    target[path[-1]] = when.isoformat(timespec="seconds").replace("+00:00", "Z")


def test_a_refreshing_dataset_runs_a_round_when_due_stays_usable_and_keeps_versions_up_to_its_retention(
    bed: Bed,
) -> None:
    bed.add("DatasetPrep", "wine", {**PREP, "refresh": {"intervalSeconds": 60, "keepVersions": 1}})
    output = storage.join(bed.artifacts.as_uri(), "datasets", "default", "wine")

    def finish(round_: int, version: str, changed: bool = True) -> dict[str, Any]:
        suffix = "wine-prep" if round_ == 0 else f"wine-prep-r{round_}"
        bed.backend.job_status(suffix, DONE)
        storage.write_json_atomic(storage.join(output, version, "manifest.json"), {"version": version})
        result = {"status": "Succeeded", "outputUri": output, "manifestUri": f"{output}/manifest.json",
                  "fingerprint": f"sha256:{version}", "version": version, "changed": changed,
                  "rows": {"total": 100 + round_}}  # fmt: skip
        bed.write("datasets", "wine", "_run/result.json" if round_ == 0 else f"_run/r{round_}/result.json", result)
        status = bed.step("DatasetPrep", "wine")
        assert status is not None
        return status

    bed.step("DatasetPrep", "wine")
    first = finish(0, "v-aaa")
    assert first["phase"] == "Succeeded" and first["version"] == "v-aaa"
    assert [v["version"] for v in first["versions"]] == ["v-aaa"]
    scheduled = bed.step("DatasetPrep", "wine")  # the next check is announced, nothing runs before it is due
    assert scheduled is not None and scheduled["refresh"]["nextTime"]
    assert bed.step("DatasetPrep", "wine") is None and len(bed.backend.applied) == 1

    obj = bed.store.objects["DatasetPrep", "wine"]
    _ago(obj, 61, "completionTime")
    started = bed.step("DatasetPrep", "wine")
    assert started is not None and started["refresh"]["state"] == "Running" and started["refresh"]["round"] == 1
    assert bed.backend.applied[-1] == [("RayJob", "wine-prep-r1")]
    assert ("RayJob", "wine-prep") in bed.backend.deleted  # the finished round goes, its result stays in the store
    current = bed.store.objects["DatasetPrep", "wine"]["status"]
    assert current["phase"] == "Succeeded" and current["outputUri"] == output  # its runs may still use it
    config = job_config(bed.backend.objects["RayJob", "wine-prep-r1"]) or ""
    assert '"refresh": true' in config and "_run/r1" in config

    unchanged = finish(1, "v-aaa", changed=False)
    assert unchanged["refresh"]["state"] == "Unchanged" and "versions" not in unchanged

    # A serving model was trained on v-aaa: past keepVersions, it stays; v-bbb does not.
    bed.add("ModelDeployment", "wine", {"model": {"fromTrainingRun": "x"}})
    md = bed.store.objects["ModelDeployment", "wine"]
    bed.store.update_status(md, {"current": {"name": "r1", "lineage": {"datasetFingerprint": "sha256:v-aaa"}}})
    for round_, version in ((2, "v-bbb"), (3, "v-ccc")):
        _ago(bed.store.objects["DatasetPrep", "wine"], 61, "refresh", "completionTime")
        assert bed.step("DatasetPrep", "wine") is not None
        done = finish(round_, version)
        assert done["refresh"]["state"] == "NewVersion" and done["version"] == version
        assert done["fingerprint"] == f"sha256:{version}" and done["rows"] == {"total": 100 + round_}
    assert [v["version"] for v in done["versions"]] == ["v-ccc", "v-aaa"]
    assert done["refresh"]["pruned"] == ["v-bbb"] and "removed v-bbb" in done["refresh"]["message"]
    assert not storage.exists(storage.join(output, "v-bbb")) and storage.exists(storage.join(output, "v-aaa"))

    # A round that fails leaves the dataset as it was and says so; the next one runs on schedule.
    _ago(bed.store.objects["DatasetPrep", "wine"], 61, "refresh", "completionTime")
    bed.step("DatasetPrep", "wine")
    bed.backend.job_status("wine-prep-r4", DONE)
    bed.write("datasets", "wine", "_run/r4/result.json", {"status": "Failed", "reason": "SourceNotFound",
                                                          "message": "source.uri: no such file"})  # fmt: skip
    obj = copy.deepcopy(bed.store.objects["DatasetPrep", "wine"])
    outcome = reconcile(obj, bed.runtime)
    assert outcome is not None and outcome.status["refresh"]["state"] == "Failed"
    assert "keeps version v-ccc" in outcome.status["refresh"]["message"] and outcome.status["refresh"]["nextTime"]
    assert [e[:2] for e in outcome.events] == [("Warning", "RefreshFailed")] and "version" not in outcome.status


def test_a_retrain_the_api_server_refuses_is_said_once_and_kept_in_status_while_it_keeps_serving(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain template is refused (an admission policy, a quota): the refusal is in status.retraining.waiting
    on every pass, and its Warning Event is posted once, not every five seconds."""
    from slipway_operator import reconcile as reconciling
    from slipway_operator.controllers import modeldeployment

    serving = bed.add("ModelDeployment", "mpg", {"model": {"fromTrainingRun": "mpg"}})
    run = {"apiVersion": API, "kind": "TrainingRun", "metadata": {"name": "mpg-retrain-1", "namespace": "default"}}
    status = {"phase": "Available", "retraining": {"runs": [], "waiting": None}}
    monkeypatch.setattr(reconciling, "observe_serving", lambda obj, rt: None)
    monkeypatch.setattr(modeldeployment, "plan", lambda obj, observed, settings: modeldeployment.Plan(
        [], [], copy.deepcopy(status), [], create=[copy.deepcopy(run)]))  # fmt: skip

    def refuse(obj: dict[str, Any]) -> None:
        raise ApplyRefused('admission webhook "quota.example" denied the request: no GPUs left in team-a')

    monkeypatch.setattr(bed.store, "create", refuse)
    events = []
    for _ in range(3):
        outcome = reconciling.reconcile_serving(copy.deepcopy(serving), bed.runtime)
        bed.store.update_status(serving, outcome.status)
        events += outcome.events
        waiting = serving["status"]["retraining"]["waiting"]
        assert "TrainingRun/mpg-retrain-1 was refused" in waiting and "no GPUs left" in waiting
    assert [e[:2] for e in events] == [("Warning", "RetrainRefused")]
