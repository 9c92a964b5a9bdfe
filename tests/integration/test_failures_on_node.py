"""Failures on the real node, diagnosed in the resource's status by the chart's operator from the pods of its
children as the scheduler and the kubelet report them: a run whose workers no node can hold, and one whose image
cannot be pulled, fail after their pendingTimeoutSeconds with the scheduler's or the kubelet's own words (and the
RayJob is suspended, freeing what its pods held), and a ModelDeployment whose model is not there crash-loops and
is never Available, with the server's last log line.

Each bound below is the timeout the test gives the operator: pendingTimeoutSeconds plus a few resync passes (10 s
for runs, 5 s for ModelDeployments), plus the kubelet's first restart back-off (10 s) for the crash loop."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import testbed
from onnode import delete, example, progress_of, ray_workers, wait_phase


@pytest.mark.timeout(600)
def test_a_run_asking_for_more_gpus_than_any_node_has_fails_after_its_pending_timeout_with_the_schedulers_reason(
    control_plane: testbed.ControlPlane, kuberay_on_node: str
) -> None:
    plane, ns = control_plane, kuberay_on_node
    run = example("auto-mpg/02-trainingrun.yaml", ns, dataset={"uri": "s3://slipway/datasets/not-needed"},
                  resources={"workers": 1, "cpusPerWorker": 0.5, "gpusPerWorker": 16, "memory": "1Gi"},
                  failurePolicy={"pendingTimeoutSeconds": 20})  # fmt: skip
    run["metadata"]["name"] = "mpg-greedy"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(run))
        started = time.monotonic()
        failed = wait_phase(plane, run, {"Failed", "Succeeded"}, 20 + 120)
        condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
        assert failed["phase"] == "Failed" and condition["reason"] == "Unschedulable", failed
        message = condition["message"]
        assert "cannot be scheduled: 0/" in message and "Insufficient nvidia.com/gpu" in message, message
        assert "nvidia.com/gpu 16" in message and "lower spec.resources" in message, message
        assert "pendingTimeoutSeconds 20s" in message, message
        assert time.monotonic() - started < 20 + 120
        rayjob = json.loads(plane.kubectl("get", "rayjob", "mpg-greedy-train", "-n", ns, "-o", "json"))
        assert rayjob["spec"]["suspend"] is True  # KubeRay deletes its cluster: the head no longer holds the node
        selector = "slipway.dev/trainingrun=mpg-greedy"
        testbed.wait_until(
            "the suspended RayJob's pods gone",
            lambda: not json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))["items"],
            120,
        )
        events = plane.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=mpg-greedy")
        assert "Unschedulable" in events or "cannot be scheduled" in events, events
    finally:
        plane.kubectl("delete", "trainingrun", "mpg-greedy", "-n", ns, "--wait=true", "--timeout=120s", check=False)


@pytest.mark.timeout(600)
def test_a_run_whose_image_cannot_be_pulled_fails_after_its_pending_timeout_naming_the_image(
    control_plane: testbed.ControlPlane, kuberay_on_node: str
) -> None:
    """The operator set up with a trainer image tag that does not exist (the way a run meets a missing image: the
    chart's workloadImage): the node has no such image and no registry it can reach, so the pods' pulls fail."""
    plane, ns = control_plane, kuberay_on_node
    operator = ["deployment/slipway", "-n", ns]
    plane.kubectl("set", "env", *operator, "SLIPWAY_IMAGE=slipway/trainer:no-such-tag")
    run = example("auto-mpg/02-trainingrun.yaml", ns, dataset={"uri": "s3://slipway/datasets/not-needed"},
                  resources={"workers": 1, "cpusPerWorker": 0.5, "memory": "1Gi"},
                  failurePolicy={"pendingTimeoutSeconds": 20})  # fmt: skip
    run["metadata"]["name"] = "mpg-no-image"
    try:
        plane.kubectl("rollout", "status", *operator, "--timeout=180s")
        plane.kubectl("apply", "-f", "-", input=json.dumps(run))
        failed = wait_phase(plane, run, {"Failed", "Succeeded"}, 20 + 120)
        condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
        assert failed["phase"] == "Failed" and condition["reason"] == "ImagePullFailed", failed
        assert "cannot pull image 'slipway/trainer:no-such-tag'" in condition["message"], condition
        assert "container ray-head" in condition["message"] or "container ray-worker" in condition["message"]
        assert "ErrImagePull" in condition["message"] or "ImagePullBackOff" in condition["message"], condition
    finally:
        plane.kubectl("delete", "trainingrun", "mpg-no-image", "-n", ns, "--wait=true", "--timeout=120s", check=False)
        plane.kubectl("set", "env", *operator, "SLIPWAY_IMAGE=slipway/trainer:dev")
        plane.kubectl("rollout", "status", *operator, "--timeout=180s")


def _deployment_status(plane: testbed.ControlPlane, ns: str, name: str) -> dict[str, Any]:
    obj = json.loads(plane.kubectl("get", "modeldeployment", name, "-n", ns, "-o", "json"))
    return dict(obj.get("status") or {})


@pytest.mark.timeout(600)
def test_a_model_deployment_whose_model_is_not_there_crash_loops_and_is_never_available(
    control_plane: testbed.ControlPlane, slipway_on_node: str
) -> None:
    plane, ns, name = control_plane, slipway_on_node, "mpg-nothing"
    manifest = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": {"uri": "s3://slipway/models/there-is-nothing-here"},
            "replicas": {"min": 1, "max": 1},
            "resources": {"cpu": "250m", "memory": "768Mi"},
            "server": {"format": "onnx"},
            "monitoring": {"drift": {"enabled": False}},
        },
    }
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        deadline, seen = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            seen = _deployment_status(plane, ns, name)
            available = next((c for c in seen.get("conditions") or [] if c["type"] == "Available"), {})
            assert not (available.get("status") == "True" or seen.get("phase") == "Available"), seen
            if available.get("reason") == "CrashLoop" and (seen.get("replicas") or {}).get("restarts", 0) >= 2:
                break
            time.sleep(2)
        else:
            pods = plane.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False)
            raise AssertionError(f"no CrashLoop within 240s:\n{json.dumps(seen, indent=1)}\n{pods}")
        message = available["message"]
        assert f"pod {name}-stable-" in message and "keeps crashing (exit code 2" in message, message
        assert "error:" in message and "there-is-nothing-here" in message, message  # the server's own last line
        assert "exit code 2" in seen["replicas"]["lastCrash"], seen
        assert seen["phase"] != "Available" and "CrashLoop" in seen["message"], seen
    finally:
        plane.kubectl("delete", "modeldeployment", name, "-n", ns, "--wait=true", "--timeout=120s", check=False)


def _failed_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == "Failed")


@pytest.mark.timeout(900)
def test_a_dataset_prep_whose_source_bucket_is_missing_or_whose_secret_is_wrong_says_storage_unavailable(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, object_store: testbed.ObjectStore
) -> None:
    """Two DatasetPreps read an S3 source from the Ray pods: one names a bucket that is not there, the other gives a
    secretRef whose secret key is wrong. Each fails with StorageUnavailable, the URI and the store's own words, and
    neither message holds the wrong secret. Bound: the RayJob's start (about a minute here) plus a resync pass."""
    plane, ns = control_plane, kuberay_on_node
    wrong = "not-the-secret-key"
    keys = {"AWS_ACCESS_KEY_ID": object_store.reader_key[0], "AWS_SECRET_ACCESS_KEY": wrong}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "source-wrong-keys", "namespace": ns},
              "stringData": keys}  # fmt: skip
    resources = {"workers": 1, "cpusPerWorker": 0.5, "memory": "2Gi"}
    missing = example("auto-mpg/01-datasetprep.yaml", ns, source={"uri": "s3://no-such-bucket-here/cars.json"},
                      resources=resources)  # fmt: skip
    missing["metadata"]["name"] = "mpg-no-bucket"
    refused = example("auto-mpg/01-datasetprep.yaml", ns,
                      source={"uri": "s3://slipway/raw/cars.json", "secretRef": "source-wrong-keys"},
                      resources=resources)  # fmt: skip
    refused["metadata"]["name"] = "mpg-wrong-keys"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
        for doc in (missing, refused):
            plane.kubectl("apply", "-f", "-", input=json.dumps(doc))
        gone = _failed_condition(wait_phase(plane, missing, {"Failed", "Succeeded"}, 600))
        assert gone["reason"] == "StorageUnavailable", gone
        assert "no such bucket 'no-such-bucket-here'" in gone["message"], gone
        denied = _failed_condition(wait_phase(plane, refused, {"Failed", "Succeeded"}, 600))
        assert denied["reason"] == "StorageUnavailable", denied
        assert "access denied" in denied["message"] and "secretRef" in denied["message"], denied
        events = plane.kubectl("get", "events", "-n", ns, "-o", "json")
        assert wrong not in json.dumps([gone, denied]) and wrong not in events
    finally:
        for doc in (missing, refused):
            plane.kubectl("delete", "datasetprep", doc["metadata"]["name"], "-n", ns, "--wait=true", "--timeout=120s",
                          check=False)  # fmt: skip
        plane.kubectl("delete", "secret", "source-wrong-keys", "-n", ns, check=False)


# Run in a worker pod's container: SIGKILL the Ray Train worker process there (its process title names it).
KILL_TRAIN_WORKER = """
import os, signal
for pid in set(filter(str.isdigit, os.listdir("/proc"))) - {str(os.getpid())}:  # not this script, which names it
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"RayTrainWorker" in title:
        os.kill(int(pid), signal.SIGKILL)
        print(pid)
"""


@pytest.mark.timeout(1200)
def test_a_ray_train_worker_killed_twice_with_max_failures_1_fails_the_run_as_worker_lost(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, object_store: testbed.ObjectStore
) -> None:
    """A training worker process dies (SIGKILL in its pod, as a crash or the kernel's OOM killer would): Ray Train
    restarts the worker group once (failurePolicy.maxFailures 1) from its checkpoint; the second death is one too
    many and the run fails with WorkerLost, saying what was retried and what to raise, and KubeRay does not start
    the job over. (A deleted or drained pod is another matter: Ray sees a preemption, resumes, and does not count
    it; the Fashion-MNIST journey deletes one.) Bound: the resync pass after Ray Train gives up."""
    plane, ns = control_plane, kuberay_on_node
    prep = example("fashion-mnist/01-datasetprep.yaml", ns, sample={"rows": 1500, "seed": 3},
                   resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"})  # fmt: skip
    prep["metadata"]["name"] = "fashion-small"
    epochs = 60  # far more than the test lets it reach: it fails by the tenth or so
    train = example(
        "fashion-mnist/02-trainingrun.yaml", ns,
        **{"dataset": {"ref": "fashion-small"}, "model.params": {"channels": [4, 8], "hidden": 16},
           "training.epochs": epochs, "training.batchSize": 64, "training.earlyStopping": None,
           "resources": {"workers": 2, "cpusPerWorker": 0.5, "memory": "2Gi"}, "export": {"formats": ["onnx"]},
           "failurePolicy": {"maxFailures": 1, "backoffLimit": 2}, "ttlSecondsAfterFinished": None},
    )  # fmt: skip
    train["metadata"]["name"] = "fashion-lost"
    rayjob = "fashion-lost-train"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))
        assert wait_phase(plane, prep, {"Succeeded", "Failed"}, 900)["phase"] == "Succeeded"
        plane.kubectl("apply", "-f", "-", input=json.dumps(train))
        progress = progress_of(object_store, f"runs/{ns}/fashion-lost/progress.json")
        testbed.wait_until("the first epoch", lambda: (progress().get("epoch") or 0) >= 1, 900)

        def training_again() -> bool:  # the restarted group trains past the checkpoint it resumed from
            now = progress()
            return bool(now.get("resumedFrom")) and (now.get("epoch") or 0) > now["resumedFrom"][-1]

        for kill in (1, 2):
            workers = ray_workers(plane, ns, rayjob)
            assert len(workers) == 2, [w["metadata"]["name"] for w in workers]
            killed = plane.kubectl("exec", "-n", ns, workers[-1]["metadata"]["name"], "-c", "ray-worker", "--",
                                   "python", "-c", KILL_TRAIN_WORKER)  # fmt: skip
            assert killed.split(), f"no Ray Train worker process in {workers[-1]['metadata']['name']}"
            assert (progress().get("epoch") or 0) < epochs
            if kill == 1:  # a second death before the group restarted would be the same failure
                testbed.wait_until("an epoch after the restart", training_again, 600)

        failed = wait_phase(plane, train, {"Failed", "Succeeded"}, 600)
        condition = _failed_condition(failed)
        assert failed["phase"] == "Failed" and condition["reason"] == "WorkerLost", failed
        message = condition["message"]
        assert "a training worker died" in message and "maxFailures" in message and "once" in message, message
        assert (failed.get("epoch") or 0) < epochs, failed
        job = json.loads(plane.kubectl("get", "rayjob", rayjob, "-n", ns, "-o", "json")).get("status") or {}
        assert not job.get("failed"), job  # the workload's own Failed result: KubeRay counts no failed attempt
    finally:
        delete(plane, train, prep)


@pytest.mark.timeout(900)
def test_a_run_whose_memory_limit_is_far_too_small_for_its_batch_fails_as_out_of_memory(
    control_plane: testbed.ControlPlane, kuberay_on_node: str
) -> None:
    """One batch of 1,200 images through 128 and 256 channels needs gigabytes of activations; the pods have 1.5 GiB.
    Ray's memory monitor kills the worker before the kernel would (seen here: 1.41 GB used of 1.46) and the run
    fails with OOMKilled, Ray's figures and what to change. Bound: the RayJob's start and one training step, plus
    a resync pass."""
    plane, ns = control_plane, kuberay_on_node
    prep = example("fashion-mnist/01-datasetprep.yaml", ns, sample={"rows": 1500, "seed": 4},
                   resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"})  # fmt: skip
    prep["metadata"]["name"] = "fashion-oom"
    train = example(
        "fashion-mnist/02-trainingrun.yaml", ns,
        **{"dataset": {"ref": "fashion-oom"}, "model.params": {"channels": [128, 256], "hidden": 256},
           "training.epochs": 3, "training.batchSize": 1200, "training.earlyStopping": None,
           "resources": {"workers": 1, "cpusPerWorker": 0.5, "memory": "1500Mi"}, "export": {"formats": ["onnx"]},
           "failurePolicy": {"maxFailures": 0, "backoffLimit": 0}, "ttlSecondsAfterFinished": None},
    )  # fmt: skip
    train["metadata"]["name"] = "fashion-oom"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))
        assert wait_phase(plane, prep, {"Succeeded", "Failed"}, 900)["phase"] == "Succeeded"
        plane.kubectl("apply", "-f", "-", input=json.dumps(train))
        failed = wait_phase(plane, train, {"Failed", "Succeeded"}, 600)
        condition = _failed_condition(failed)
        assert failed["phase"] == "Failed" and condition["reason"] == "OOMKilled", failed
        message = condition["message"]  # Ray's memory monitor's figures: "... was 1.41GB used / 1.46GB limit (0.96)"
        assert "ran out of memory" in message and "GB limit" in message, message
        assert "spec.resources.memory" in message and "training.batchSize" in message, message
    finally:
        delete(plane, train, prep)
