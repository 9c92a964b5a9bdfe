"""The Auto MPG journey of examples/auto-mpg, applied with kubectl to the chart's operator on the real node: each
compute step a KubeRay RayJob whose head, worker and submitter pods run the trainer image built from
images/trainer/Dockerfile, reading and writing the S3 store; then the sweep's best model served from the server
image and asked for predictions through the Service.

What KWOK could never show: the trainer image starts Ray as its non-root user, KubeRay finds the head's dashboard
and submits the job, the workload reads its config from the file its pod's annotation shows it (a downward-API
volume) and the store with the Secret's credentials, Ray Train and Ray Tune run across real pods, and the operator
reads each `result.json` back.
The examples are trimmed (fewer epochs and trials) and nothing else changes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import buildkit
import pytest
import testbed
from node import RealNode
from onnode import Load, delete, example, progress_epoch, ray_workers, wait_phase, wait_rayjob_ended


@pytest.mark.timeout(2400)
def test_the_auto_mpg_journey_runs_as_rayjobs_on_real_pods_and_its_best_model_answers_through_the_service(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, real_node: RealNode
) -> None:
    plane, ns = control_plane, kuberay_on_node
    applied: list[dict[str, Any]] = []

    def apply(doc: dict[str, Any]) -> None:
        plane.kubectl("apply", "-f", "-", input=json.dumps(doc))
        applied.append(doc)

    try:
        prep = example(
            "auto-mpg/01-datasetprep.yaml", ns, resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"}
        )
        apply(prep)
        # The operator pod deleted mid-reconcile: its successor (the chart's Deployment) adopts what was made,
        # one RayJob (a run's one child: no ConfigMap), never a second.
        testbed.wait_until("the prep's RayJob", lambda: plane.kubectl("get", "rayjob", "mpg-prep", "-n", ns,
                                                                       check=False) != "", 120)  # fmt: skip
        plane.kubectl("delete", "pod", "-n", ns, "-l", "app.kubernetes.io/name=slipway", "--wait=false")
        done = wait_phase(plane, prep, {"Succeeded", "Failed"}, 900)

        owned: list[dict[str, Any]] = []

        def job_ended() -> bool:
            # The status turns Succeeded once the workload's result.json is in the store; KubeRay marks the job
            # SUCCEEDED a few seconds later, when its driver has exited and the dashboard says so.
            owned[:] = json.loads(plane.kubectl("get", "rayjobs,configmaps", "-n", ns, "-l",
                                                "slipway.dev/datasetprep=mpg", "-o", "json"))["items"]  # fmt: skip
            jobs = [o for o in owned if o["kind"] == "RayJob"]
            return all((o.get("status") or {}).get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED") for o in jobs)

        testbed.wait_until("the prep's RayJob to end", job_ended, 120)
        assert sorted(o["kind"] for o in owned) == ["RayJob"], [o["metadata"]["name"] for o in owned]
        assert done["phase"] == "Succeeded", done
        # Its RayJob ran on the real node, as the image's non-root user, and its pods are gone afterwards
        # (shutdownAfterJobFinishes) or finished.
        rayjob = next(o for o in owned if o["kind"] == "RayJob")
        assert rayjob["status"]["jobStatus"] == "SUCCEEDED", rayjob["status"]
        head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["image"] == buildkit.image_tag("trainer")
        assert head["securityContext"]["runAsNonRoot"] is True
        assert done["rows"]["train"] > 200 and done["outputUri"].startswith("s3://slipway/"), done

        train = example(
            "auto-mpg/02-trainingrun.yaml",
            ns,
            **{"training.epochs": 15, "resources.memory": "2Gi", "training.earlyStopping.patience": 5},
        )
        apply(train)
        trained = wait_phase(plane, train, {"Succeeded", "Failed"}, 900)
        assert trained["phase"] == "Succeeded", trained
        assert trained["metrics"]["test_mae"] < 6, trained["metrics"]  # miles per gallon; a mean predictor: ~6.5
        assert trained["modelUri"].startswith("s3://slipway/"), trained

        sweep = example("auto-mpg/03-tuningsweep.yaml", ns, maxTrials=3, parallelTrials=1,
                        **{"template.training.epochs": 8, "scheduler.gracePeriod": 3})  # fmt: skip
        apply(sweep)
        swept = wait_phase(plane, sweep, {"Succeeded", "Failed"}, 1200)
        assert swept["phase"] == "Succeeded", swept
        assert swept["trials"]["completed"] >= 1 and swept["bestTrial"]["id"], swept
        assert swept["modelUri"].startswith("s3://slipway/"), swept

        served = example("auto-mpg/04-modeldeployment.yaml", ns, replicas={"min": 1, "max": 1},
                         resources={"cpu": "250m", "memory": "768Mi"},
                         monitoring={"drift": {"enabled": False}})  # fmt: skip
        apply(served)
        up = wait_phase(plane, served, {"Available"}, 300)
        assert up["current"]["modelUri"] == swept["modelUri"], (up, swept)
        with plane.port_forward(ns, "svc/mpg", 80) as url:
            with urllib.request.urlopen(f"{url}/v2/models/mpg", timeout=10) as answer:
                features = json.loads(answer.read())["parameters"]["features"]
            car = {"Cylinders": 4, "Displacement": 97.0, "Horsepower": 88.0, "Weight_in_lbs": 2130,
                   "Acceleration": 14.5, "Year": "1971-01-01", "Origin": "Japan"}  # fmt: skip
            # One named input per raw feature, as tests/integration/test_serve.py sends them; Year as the date the
            # dataset holds (the server turns it into the decimal year training used).
            body = {"inputs": [{"name": f, "shape": [1], "datatype": "BYTES" if isinstance(car[f], str) else "FP64",
                                "data": [car[f]]} for f in features]}  # fmt: skip
            request = urllib.request.Request(f"{url}/v2/models/mpg/infer", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    (mpg,) = json.loads(answer.read())["outputs"]
            except urllib.error.HTTPError as err:  # the server says which input it refused
                raise AssertionError(f"HTTP {err.code}: {err.read().decode(errors='replace')}") from None
        assert 15 < mpg["data"][0] < 45, mpg  # a light 4-cylinder car of 1971: about 27 mpg
    finally:
        delete(plane, *reversed(applied))


EPOCHS = 12


@pytest.mark.timeout(1800)
def test_fashion_mnist_trains_data_parallel_across_two_worker_pods_and_resumes_when_one_is_drained(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, real_node: RealNode, object_store: testbed.ObjectStore
) -> None:
    """DDP (gloo) between two Ray worker pods, half a core each; one pod evicted mid-training (what `kubectl drain`
    does to each pod of the node): its preStop hook asks the training loop to stop, the loop checkpoints the epoch it
    had finished (the run checkpoints only every 1000 epochs), Ray Train restarts the worker group from that
    checkpoint and the status says from which epoch, with no finished epoch lost.

    The epoch is read from the run's progress.json in the store, not from the status (which the operator refreshes
    every 10 s): an epoch takes a few seconds here, and a worker deleted by what the status said could be deleted
    after the last epoch, when there is nothing left to resume (seen in a CI run)."""
    plane, ns = control_plane, kuberay_on_node
    prep = example("fashion-mnist/01-datasetprep.yaml", ns, sample={"rows": 3000, "seed": 1},
                   resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"})  # fmt: skip
    train = example(
        "fashion-mnist/02-trainingrun.yaml", ns,
        **{"model.params": {"channels": [8, 16], "hidden": 32}, "training.epochs": EPOCHS, "training.batchSize": 64,
           "training.earlyStopping": None, "resources": {"workers": 2, "cpusPerWorker": 0.5, "memory": "2Gi"},
           "export": {"formats": ["onnx"]}, "ttlSecondsAfterFinished": None, "checkpoint": {"everyEpochs": 1000}},
    )  # fmt: skip
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))
        assert wait_phase(plane, prep, {"Succeeded", "Failed"}, 900)["phase"] == "Succeeded"
        plane.kubectl("apply", "-f", "-", input=json.dumps(train))
        rayjob = "fashion-cnn-train"
        epoch_now = progress_epoch(object_store, f"runs/{ns}/fashion-cnn/progress.json")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and epoch_now() < 2:
            time.sleep(0.5)
        assert 2 <= epoch_now() < EPOCHS - 2, epoch_now()
        workers = ray_workers(plane, ns, rayjob)
        assert len(workers) == 2, [w["metadata"]["name"] for w in workers]
        assert {w["spec"]["nodeName"] for w in workers} == {real_node.name}
        assert workers[0]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
        drained = workers[1]["metadata"]["name"]
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": drained, "namespace": ns}}
        plane.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{drained}/eviction", "-f", "-",
                      input=json.dumps(eviction))  # fmt: skip
        plane.kubectl("wait", "--for=delete", f"pod/{drained}", "-n", ns, "--timeout=90s")
        killed_at = epoch_now()  # no epoch ends while the group waits for the evicted rank
        assert killed_at < EPOCHS, f"the worker died only after the last epoch ({killed_at}): nothing to resume"

        done = wait_phase(plane, train, {"Succeeded", "Failed"}, 900)
        assert done["phase"] == "Succeeded", done
        assert done["resumedFrom"] and done["resumedFrom"][0] == killed_at, (done, killed_at)
        assert done["epochsLost"] == 0, done
        assert done["epoch"] == EPOCHS and done["metrics"]["test_accuracy"] > 0.5, done
    finally:
        delete(plane, train, prep)


PREEMPTED_EPOCHS = 40


@pytest.mark.timeout(2400)
def test_a_run_preempted_by_kueue_for_a_higher_priority_one_resumes_from_its_checkpoint_when_admitted_again(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, kueue: testbed.Kueue, object_store: testbed.ObjectStore
) -> None:
    """Kueue's real manager with a ClusterQueue whose CPU quota fits one run (head 250m + one 1-CPU worker + the
    submitter's 200m) and that preempts lower priorities. A low-priority Fashion-MNIST run trains on the real node;
    mid-training a high-priority run arrives: Kueue takes the low run's quota (it suspends its RayJob, KubeRay
    deletes its pods), the low run says Preempted with its place while the high one runs and succeeds; then Kueue
    admits the low run again and it resumes after the epoch it had finished when its pods were deleted: it
    checkpoints only every 1000 epochs, so that checkpoint is the one its preStop hook asked for."""
    plane, ns = control_plane, kuberay_on_node
    queue = f"slipway-{ns}-cq"
    objects = [
        *({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": f"slipway-{n}"},
           "value": v} for n, v in (("low", 10), ("high", 1000))),
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": queue}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": queue},
         "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{"name": queue, "resources": [
                      {"name": "cpu", "nominalQuota": "2"}, {"name": "memory", "nominalQuota": "16Gi"}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "team", "namespace": ns},
         "spec": {"clusterQueue": queue}},
    ]  # fmt: skip
    prep = example("fashion-mnist/01-datasetprep.yaml", ns, sample={"rows": 3000, "seed": 1},
                   resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"})  # fmt: skip
    prep["metadata"]["name"] = "fashion-queued"

    def run(name: str, priority: str, epochs: int) -> dict[str, Any]:
        doc = example(
            "fashion-mnist/02-trainingrun.yaml", ns,
            **{"dataset": {"ref": "fashion-queued"}, "model.params": {"channels": [8, 16], "hidden": 32},
               "training.epochs": epochs, "training.batchSize": 64, "training.earlyStopping": None,
               "resources": {"workers": 1, "cpusPerWorker": 1, "memory": "2Gi", "queue": "team",
                             "priorityClassName": f"slipway-{priority}"},
               "export": {"formats": ["onnx"]}, "ttlSecondsAfterFinished": None,
               "checkpoint": {"everyEpochs": 1000}},
        )  # fmt: skip
        doc["metadata"]["name"] = name
        return doc

    # An epoch takes about a second here: enough epochs that the low run is still mid-run when it is preempted.
    low, high = run("fashion-low", "low", PREEMPTED_EPOCHS), run("fashion-high", "high", 1)
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))  # not queued: runs at once
        assert wait_phase(plane, prep, {"Succeeded", "Failed"}, 900)["phase"] == "Succeeded"
        plane.kubectl("apply", "-f", "-", input=json.dumps(low))
        epoch_now = progress_epoch(object_store, f"runs/{ns}/fashion-low/progress.json")
        testbed.wait_until("the low-priority run at epoch 2", lambda: epoch_now() >= 2, 900)
        plane.kubectl("apply", "-f", "-", input=json.dumps(high))

        def preempted() -> dict[str, Any]:
            status = json.loads(plane.kubectl("get", "trainingrun", "fashion-low", "-n", ns, "-o", "json"))["status"]
            said = [c for c in status.get("conditions") or [] if c["type"] == "Reconciling" and c["reason"] ==
                    "Preempted"]  # fmt: skip
            return said[0] if said and status["phase"] == "Pending" else {}

        testbed.wait_until("the low-priority run to say it was preempted", preempted, 180)
        assert "queued again in LocalQueue team" in preempted()["message"], preempted()
        stopped_at = epoch_now()
        assert stopped_at < PREEMPTED_EPOCHS, f"the low run finished ({stopped_at}) before it was preempted"

        assert wait_phase(plane, high, {"Succeeded", "Failed"}, 900)["phase"] == "Succeeded"
        done = wait_phase(plane, low, {"Succeeded", "Failed"}, 900)
        assert done["phase"] == "Succeeded", done
        # Resumed from the checkpoint its pods wrote when they were deleted (a finished epoch or so past
        # `stopped_at`), not from epoch 1, and not the result of a run that finished anyway.
        if not done.get("resumedFrom"):  # what the run's driver said, to tell why
            import boto3

            s3 = boto3.client("s3", endpoint_url=object_store.endpoint, aws_access_key_id=object_store.access_key,
                              aws_secret_access_key=object_store.secret_key, region_name="us-east-1")  # fmt: skip
            key = done["logUri"].removeprefix("s3://slipway/")
            log = s3.get_object(Bucket="slipway", Key=key)["Body"].read().decode(errors="replace")
            raise AssertionError(f"not resumed (stopped at {stopped_at}): {json.dumps(done)[:3000]}\n{log[-6000:]}")
        assert 2 <= done["resumedFrom"][0] <= stopped_at + 3, (done, stopped_at)
        assert done["epochsLost"] == 0, done
        assert done["epoch"] == PREEMPTED_EPOCHS and not done.get("reusedAt"), done
    finally:
        delete(plane, high, low, prep)
        for doc in reversed(objects):
            plane.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "-n", ns, "--wait=false",
                          check=False)  # fmt: skip


@pytest.mark.timeout(900)
def test_bad_data_fails_the_run_once_with_its_reason_and_kuberay_does_not_retry_it(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, object_store: testbed.ObjectStore
) -> None:
    """A failure no retry mends (here a label that is not a column) is the workload's own result: the job exits 0
    with its Failed result.json, KubeRay counts no failed attempt and starts no second cluster. Its log is kept
    with its artifacts: `slipway logs` prints it, with the reason, after the RayJob and its cluster are gone."""
    plane, ns = control_plane, kuberay_on_node
    prep = example("auto-mpg/01-datasetprep.yaml", ns, label="mpg_typo",
                   resources={"workers": 1, "cpusPerWorker": 1, "memory": "2Gi"})  # fmt: skip
    prep["metadata"]["name"] = "mpg-typo"
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))
        failed = wait_phase(plane, prep, {"Succeeded", "Failed"}, 600)
        assert failed["phase"] == "Failed", failed
        condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
        assert condition["reason"] == "LabelNotFound" and "'mpg_typo' is not a column" in condition["message"]
        assert "Miles_per_Gallon" in condition["message"]  # the columns there are, to pick from
        # The operator reads the Failed result.json as soon as it is written, which may be before the driver has
        # exited and KubeRay has seen the Ray job end: wait for that end, then check it was a success, once.
        rayjob = wait_rayjob_ended(plane, ns, "mpg-typo-prep", 180)
        assert rayjob["jobStatus"] == "SUCCEEDED" and not rayjob.get("failed"), rayjob
        assert "outputUri" not in failed  # nothing a failed run wrote is presented as a result

        plane.kubectl("delete", "rayjob", "mpg-typo-prep", "-n", ns, "--wait=true", "--timeout=120s")
        selector = "slipway.dev/datasetprep=mpg-typo"
        testbed.wait_until(
            "the RayCluster's pods gone",
            lambda: not json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))["items"],
            180,
        )
        env = {**os.environ, "AWS_ACCESS_KEY_ID": object_store.access_key,
               "AWS_SECRET_ACCESS_KEY": object_store.secret_key, "AWS_ENDPOINT_URL": object_store.endpoint,
               "AWS_REGION": "us-east-1"}  # fmt: skip
        logs = subprocess.run([sys.executable, "-m", "slipway_operator.cli", "logs", "mpg-typo", "-n", ns,
                               "--kubeconfig", str(plane.kubeconfig)], capture_output=True, text=True, env=env,
                              timeout=120)  # fmt: skip
        assert logs.returncode == 0, logs.stderr
        assert "error: LabelNotFound" in logs.stdout and "'mpg_typo' is not a column" in logs.stdout, logs.stdout
        described = subprocess.run([sys.executable, "-m", "slipway_operator.cli", "describe", "DatasetPrep/mpg-typo",
                                    "-n", ns, "--kubeconfig", str(plane.kubeconfig)], capture_output=True,
                                   text=True, env=env, timeout=120)  # fmt: skip
        assert described.returncode == 0, described.stderr
        assert "Diagnosis:  LabelNotFound" in described.stdout and "logs/driver.log" in described.stdout
    finally:
        plane.kubectl("delete", "datasetprep", "mpg-typo", "-n", ns, "--wait=true", "--timeout=120s", check=False)


def _cars_csv(rows: slice) -> bytes:
    from vega_datasets import data as vega

    cars = vega.cars()
    cars["Year"] = cars["Year"].dt.year
    return str(cars.iloc[rows].to_csv(index=False)).encode()


@pytest.mark.timeout(1800)
def test_new_rows_in_s3_make_a_new_version_a_retrain_and_a_rollout_through_shadow_and_canary_on_real_pods(
    control_plane: testbed.ControlPlane, kuberay_on_node: str, object_store: testbed.ObjectStore, real_node: RealNode
) -> None:
    """The closed loop on the real node. A DatasetPrep reads a folder of CSV files in S3 with `refresh` every 10 s;
    a 3-epoch model of it is served with `autoUpdate.retrain` on new dataset versions, a shadow stage and a canary,
    under a steady client inside the node's network. Its first round finds the same objects (their ETags) and
    reads nothing; a second file landing in the folder gives a new version beside the first in the store (each round
    its own RayJob, the finished one removed); the deployment retrains on it (a RayJob), the retrain is better, answers
    copies of the client's requests in shadow, passes its canary step on them and serves, while every request is
    answered. Bound: a RayJob's start (about a minute here) per round and per run, plus intervals and passes."""
    import boto3

    plane, ns = control_plane, kuberay_on_node
    s3 = boto3.client("s3", endpoint_url=object_store.endpoint, aws_access_key_id=object_store.access_key,
                      aws_secret_access_key=object_store.secret_key, region_name="us-east-1")  # fmt: skip
    folder = f"raw/refresh-{ns}"
    s3.put_object(Bucket="slipway", Key=f"{folder}/part-0.csv", Body=_cars_csv(slice(0, 300)))
    prep = example("auto-mpg/01-datasetprep.yaml", ns, source={"uri": f"s3://slipway/{folder}/", "format": "csv"},
                   refresh={"intervalSeconds": 10, "keepVersions": 2},
                   resources={"workers": 1, "cpusPerWorker": 0.5, "memory": "2Gi"})  # fmt: skip
    prep["metadata"]["name"] = "mpg-fresh"
    small = {"dataset": {"ref": "mpg-fresh"}, "training": {"epochs": 3, "batchSize": 32},
             "resources": {"workers": 1, "cpusPerWorker": 0.5, "memory": "2Gi"}}  # fmt: skip
    train = example("auto-mpg/02-trainingrun.yaml", ns, **small)
    template = {**train["spec"], "training": {"epochs": 20, "batchSize": 32}, "optimizer": {"learningRate": 0.01}}
    served = example(
        "auto-mpg/04-modeldeployment.yaml", ns, model={"fromTrainingRun": "mpg-mlp"}, replicas={"min": 1},
        resources={"cpu": "250m", "memory": "768Mi"}, monitoring={"drift": {"enabled": False}},
        rollout={"strategy": "canary", "shadow": {"intervalSeconds": 10, "minRequests": 10, "maxRelativeDifference": 2},
                 "canary": {"steps": [50], "intervalSeconds": 10,
                            "analysis": {"minRequests": 5, "maxErrorRate": 0.01, "maxP99LatencyMs": 2000}}},
        autoUpdate={"enabled": True, "selector": {"matchLabels": {"app": "mpg"}},
                    "gate": {"metric": "test_mae", "direction": "minimize"},
                    "retrain": {"trainingRun": template, "cooldownSeconds": 3600,
                                "triggers": {"datasetChanged": True, "qualityDropped": False}}},
    )  # fmt: skip

    def status(kind: str = "datasetprep", name: str = "mpg-fresh") -> dict[str, Any]:
        return (
            json.loads(plane.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False) or "{}").get("status")
            or {}
        )

    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(prep))
        first = wait_phase(plane, prep, {"Succeeded", "Failed"}, 600)
        assert first["phase"] == "Succeeded" and first["rows"]["total"] > 0, first
        for doc in (train, served):
            plane.kubectl("apply", "-f", "-", input=json.dumps(doc))
        testbed.wait_until("a refresh round that finds the source unchanged",
                           lambda: (status().get("refresh") or {}).get("state") == "Unchanged", 300)  # fmt: skip
        assert status()["version"] == first["version"]
        up = wait_phase(plane, served, {"Available"}, 900)
        serving = up["current"]["name"]
        ip = json.loads(plane.kubectl("get", "service", "mpg", "-n", ns, "-o", "json"))["spec"]["clusterIP"]
        assert real_node.net is not None
        code, metadata = real_node.net.http_get(ip, 80, "/v2/models/mpg")
        assert code == 200, metadata
        car = {"Cylinders": 4, "Displacement": 97.0, "Horsepower": 88.0, "Weight_in_lbs": 2130, "Acceleration": 14.5,
               "Year": "1971-01-01", "Origin": "Japan"}  # fmt: skip
        features = json.loads(metadata)["parameters"]["features"]
        body = json.dumps({"inputs": [{"name": f, "shape": [1], "datatype": "BYTES" if isinstance(car[f], str)
                                       else "FP64", "data": [car[f]]} for f in features]}).encode()  # fmt: skip

        with Load(real_node, ip, "mpg", body) as load:
            s3.put_object(Bucket="slipway", Key=f"{folder}/part-1.csv", Body=_cars_csv(slice(300, None)))
            seen: dict[str, Any] = {}
            testbed.wait_until(
                "a new version", lambda: seen.update(status()) or seen.get("version") != first["version"], 400
            )
            now = dict(seen)  # read once: the next round may start 10 s later
            testbed.wait_until(
                "the retrain served",
                lambda: (
                    (status("modeldeployment", "mpg").get("current") or {}).get("name") != serving
                    and status("modeldeployment", "mpg").get("phase") == "Available"
                ),
                900,
            )
        assert now["phase"] == "Succeeded" and now["refresh"]["state"] == "NewVersion", now
        assert now["rows"]["total"] > first["rows"]["total"] and now["fingerprint"] != first["fingerprint"]
        assert [v["version"] for v in now["versions"]] == [now["version"], first["version"]]
        listed = s3.list_objects_v2(Bucket="slipway", Prefix=f"datasets/{ns}/mpg-fresh/")
        keys = {o["Key"] for o in listed.get("Contents", [])}
        for version in (first["version"], now["version"]):
            assert f"datasets/{ns}/mpg-fresh/{version}/manifest.json" in keys, sorted(keys)[:20]
        rayjobs = json.loads(plane.kubectl("get", "rayjobs", "-n", ns, "-o", "json"))["items"]
        names = {j["metadata"]["name"] for j in rayjobs if j["metadata"]["name"].startswith("mpg-fresh")}
        assert len(names) == 1 and "mpg-fresh-prep" not in names, names  # one round's RayJob: the finished go
        events = plane.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=mpg-fresh")
        assert "NewVersion" in events, events

        retrained, deployment = status("trainingrun", "mpg-retrain-1"), status("modeldeployment", "mpg")
        assert retrained["lineage"]["datasetFingerprint"] == now["fingerprint"], retrained["lineage"]
        assert retrained["lineage"]["retrainReason"].startswith("new dataset version"), retrained["lineage"]
        assert deployment["current"]["source"] == "TrainingRun/mpg-retrain-1", deployment["current"]
        shadowed = deployment["shadowTraffic"]
        # Judged once 10 copies were sent (minRequests); a copy's comparison may still be under way when the servers
        # are scraped, so the rows compared can trail the copies by a few (seen: 9 rows of 10 copies).
        assert shadowed["verdict"] == "Passed" and shadowed["requests"] >= 10, shadowed
        assert 0 < shadowed["rows"] <= shadowed["requests"], shadowed
        replaced = deployment["history"][0]
        assert replaced["name"] == serving and replaced["outcome"] == "Replaced", replaced
        assert re.search(r"over [1-9]\d* requests", replaced["reason"]), replaced["reason"]  # judged on requests
        assert load.codes[200] > 0 and set(load.codes) == {200}, load.codes
    finally:
        delete(plane, served, train, prep)
