"""The operator (kubernetes backend) on the real control plane: sweeps, model deployments on KWOK nodes, specs
only the operator can refuse, a started run's spec changes, KubeRay missing, every example, Events and the
operator's own metrics. KubeRay's controller is not running here: tests that need a RayJob's status write it
as KubeRay would, and results are written to the artifact store as the workloads would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflowserver
import pytest
import testbed
import yaml
from kopf.testing import KopfRunner
from prometheus_client.parser import text_string_to_metric_families

from slipway_operator.builders import job_config

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture
def operator(
    kuberay_crds: testbed.ControlPlane,
    slipway_crds: testbed.ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, int]]:
    """The operator (kubernetes backend) watching `namespace`: (the artifact store folder, its metrics port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(kuberay_crds.kubeconfig))
    monkeypatch.setenv("SLIPWAY_STORE", (tmp_path / "store").as_uri())
    monkeypatch.setenv("SLIPWAY_IMAGE", "slipway/trainer:test")
    monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")
    monkeypatch.setenv("SLIPWAY_METRICS_ADDRESS", f"127.0.0.1:{port}")
    args = ["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"]
    with KopfRunner(args) as runner:
        yield tmp_path / "store", port
    assert runner.exit_code == 0, runner.output[-3000:]
    assert "Traceback" not in runner.output, runner.output[-5000:]


def get(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out else {}


def status(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(get(plane, kind, name, namespace).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def apply(plane: testbed.ControlPlane, namespace: str, *docs: dict[str, Any]) -> None:
    plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
    )


def example(path: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / path).read_text()))


def test_every_example_is_reconciled_and_each_kind_says_what_it_waits_for(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "fashion-mnist"), "-f", str(EXAMPLES / "auto-mpg"))
    docs = [
        d
        for folder in ("fashion-mnist", "auto-mpg")
        for f in sorted((EXAMPLES / folder).glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]

    def all_have_a_phase() -> bool:
        return all(status(plane, d["kind"], d["metadata"]["name"], namespace).get("phase") for d in docs)

    testbed.wait_until("a status on every example", all_have_a_phase, 90)
    for doc in docs:
        st = status(plane, doc["kind"], doc["metadata"]["name"], namespace)
        if doc["kind"] == "DatasetPrep":
            assert st["phase"] == "Pending" and st["rayJobName"] == f"{doc['metadata']['name']}-prep"
        else:  # everything else waits for a dataset or a model that is not ready yet
            assert st["phase"] == "Waiting", (doc["metadata"]["name"], st)
            assert condition(st, "Ready")["reason"] == "WaitingForDependency"
    jobs = plane.kubectl("get", "rayjobs", "-n", namespace, "-o", "name").split()
    assert sorted(jobs) == ["rayjob.ray.io/fashion-prep", "rayjob.ray.io/mpg-prep"]
    events = plane.kubectl("get", "events", "-n", namespace, "-o", "json")
    reasons = {
        e["reason"]
        for e in json.loads(events)["items"]
        if e["source"].get("component") == "kopf" or e.get("reportingComponent") == "kopf"
    }
    assert {"Pending", "Waiting"} <= reasons, reasons


def test_a_sweep_runs_as_a_ray_job_and_reports_its_best_trial(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    store, port = operator
    sweep = example("fashion-mnist/03-tuningsweep.yaml")
    sweep["spec"]["template"]["dataset"] = {"uri": "s3://data/fashion"}
    apply(plane, namespace, sweep)
    testbed.wait_until("the sweep's RayJob", lambda: get(plane, "rayjob", "fashion-sweep-tune", namespace), 60)
    job = get(plane, "rayjob", "fashion-sweep-tune", namespace)
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2  # parallelTrials trials at once, each with the template's GPU
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    config = json.loads(job_config(job) or "")
    assert config["datasetUri"] == "s3://data/fashion" and config["spec"]["maxTrials"] == 12
    assert config["lineage"] == {"tuningSweep": "fashion-sweep"}

    artifacts = store / "sweeps" / namespace / "fashion-sweep"
    artifacts.mkdir(parents=True)
    (artifacts / "progress.json").write_text(
        json.dumps({"phase": "Tuning", "trialsDone": 3, "trialsRunning": 2, "maxTrials": 12})
    )
    plane.kubectl(
        "patch",
        "rayjob",
        "fashion-sweep-tune",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}),
    )
    testbed.wait_until(
        "3/12 trials",
        lambda: status(plane, "tuningsweep", "fashion-sweep", namespace).get("progress") == "3/12 trials",
        60,
    )
    assert status(plane, "tuningsweep", "fashion-sweep", namespace)["trials"]["running"] == 2
    result = {
        "status": "Succeeded",
        "metrics": {"test_loss": 0.27, "test_accuracy": 0.91},  # the key metric is the objective's, not the first
        "modelUri": f"{artifacts.as_uri()}/model",
        "bestTrial": {"id": "t7", "params": {"optimizer.learningRate": 0.002}, "metric": 0.915},
        "trials": {"total": 12, "completed": 9, "stoppedEarly": 3, "failed": 0, "notStarted": 0},
        "leaderboardUri": f"{artifacts.as_uri()}/report/leaderboard.json",
        "lineage": {"tuningSweep": "fashion-sweep", "trial": "t7", "datasetUri": "s3://data/fashion"},
    }
    (artifacts / "result.json").write_text(json.dumps(result))
    testbed.wait_until(
        "the sweep to succeed",
        lambda: status(plane, "tuningsweep", "fashion-sweep", namespace).get("phase") == "Succeeded",
        60,
    )
    st = status(plane, "tuningsweep", "fashion-sweep", namespace)
    assert st["bestTrial"] == {"id": "t7", "params": {"optimizer.learningRate": 0.002}, "metric": 0.915}
    assert st["trials"]["stoppedEarly"] == 3 and st["keyMetric"] == "test_accuracy=0.91"
    assert st["lineage"]["trial"] == "t7"
    assert st["startTime"] <= st["completionTime"], st  # RFC 3339, in UTC: string order is time order
    table = plane.kubectl("get", "tuningsweep", "fashion-sweep", "-n", namespace, "-o", "wide")
    assert "Succeeded" in table and "test_accuracy=0.91" in table and "t7" in table

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("slipway_operator_reconciles_total", (("kind", "TuningSweep"), ("outcome", "ok")))] >= 3
    assert samples[("slipway_operator_resources", (("kind", "TuningSweep"), ("phase", "Succeeded")))] == 1
    # Events: one per phase change (other operators in this test process count into the same registry)
    assert samples[("slipway_operator_events_total", (("kind", "TuningSweep"), ("reason", "Succeeded")))] >= 1


def test_a_started_runs_spec_change_is_refused_not_ignored(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    sweep = example("fashion-mnist/03-tuningsweep.yaml")
    sweep["spec"]["template"]["dataset"] = {"uri": "s3://data/fashion"}
    apply(plane, namespace, sweep)
    testbed.wait_until("the RayJob", lambda: get(plane, "rayjob", "fashion-sweep-tune", namespace), 60)
    before = job_config(get(plane, "rayjob", "fashion-sweep-tune", namespace))
    # The API server refuses what its immutability rules can see...
    with pytest.raises(testbed.TestbedError, match="cannot change once the TuningSweep exists"):
        plane.kubectl(
            "patch", "tuningsweep", "fashion-sweep", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"algorithm":"random"}}',
        )  # fmt: skip
    # ...budgets are not under those rules: the operator sees the change to a started sweep and refuses it.
    plane.kubectl(
        "patch", "tuningsweep", "fashion-sweep", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxTrials":20}}'
    )
    testbed.wait_until(
        "the change to be refused",
        lambda: status(plane, "tuningsweep", "fashion-sweep", namespace).get("phase") == "Invalid",
        60,
    )
    st = status(plane, "tuningsweep", "fashion-sweep", namespace)
    stalled = condition(st, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert "(maxTrials)" in stalled["message"] and "delete and re-create" in stalled["message"]
    assert job_config(get(plane, "rayjob", "fashion-sweep-tune", namespace)) == before  # the run keeps its spec
    # Reverted, it runs on; suspending is a change a started run takes.
    plane.kubectl(
        "patch", "tuningsweep", "fashion-sweep", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"maxTrials":12,"suspend":true}}',
    )  # fmt: skip
    testbed.wait_until(
        "the RayJob to be suspended",
        lambda: get(plane, "rayjob", "fashion-sweep-tune", namespace)["spec"].get("suspend") is True,
        60,
    )


def test_what_only_the_operator_can_check_stalls_the_resource_with_an_event(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    sweep = example("fashion-mnist/03-tuningsweep.yaml")
    sweep["metadata"]["name"] = "bad-sweep"
    sweep["spec"]["searchSpace"]["model.params.nonexistent.deep"] = {"uniform": [0.0, 1.0]}
    sweep["spec"]["searchSpace"]["training.epochz"] = {"choice": [1, 2]}
    apply(plane, namespace, sweep)  # the API server cannot know the template's fields: it accepts this
    testbed.wait_until(
        "InvalidSpec", lambda: status(plane, "tuningsweep", "bad-sweep", namespace).get("phase") == "Invalid", 60
    )
    stalled = condition(status(plane, "tuningsweep", "bad-sweep", namespace), "Stalled")
    assert stalled["reason"] == "InvalidSpec" and "training.epochz" in stalled["message"]
    assert not get(plane, "rayjob", "bad-sweep-tune", namespace)
    events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=bad-sweep")
    assert "Invalid" in events and "Warning" in events


def test_a_file_uri_in_a_spec_is_refused_on_the_cluster(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    run = example("fashion-mnist/02-trainingrun.yaml")
    run["spec"]["dataset"] = {"uri": "file:///home/me/fashion"}  # fine for `slipway run`, not for a pod
    apply(plane, namespace, run)
    testbed.wait_until(
        "InvalidSpec", lambda: status(plane, "trainingrun", "fashion-cnn", namespace).get("phase") == "Invalid", 60
    )
    stalled = condition(status(plane, "trainingrun", "fashion-cnn", namespace), "Stalled")
    assert "spec.dataset.uri" in stalled["message"] and "--allow-file-uris" in stalled["message"]
    assert not get(plane, "rayjob", "fashion-cnn-train", namespace)


def test_a_model_deployment_serves_on_kwok_and_a_canary_without_metrics_is_rolled_back(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    plane = control_plane
    serving = example("fashion-mnist/04-modeldeployment.yaml")
    serving["spec"]["model"] = {"uri": "s3://models/fashion/v1"}
    serving["spec"]["rollout"]["canary"]["intervalSeconds"] = 3
    serving["spec"]["rollout"].pop("shadow")  # straight to the canary (a shadow is judged like it, unit-tested)
    serving["spec"]["autoUpdate"] = {"enabled": False}
    apply(plane, namespace, serving)
    testbed.wait_until(
        "Available", lambda: status(plane, "modeldeployment", "fashion", namespace).get("phase") == "Available", 90
    )
    st = status(plane, "modeldeployment", "fashion", namespace)
    assert st["endpoint"] == f"http://fashion.{namespace}.svc.cluster.local" and st["readyReplicas"] == "2/2"
    stable = get(plane, "deployment", "fashion-stable", namespace)
    pods = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-l", "slipway.dev/track=stable", "-o", "json"))[
        "items"
    ]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    config = json.loads(get(plane, "configmap", f"fashion-{st['current']['name']}", namespace)["data"]["config.json"])
    assert config["modelUri"] == "s3://models/fashion/v1" and config["modelName"] == "fashion"
    assert stable["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert get(plane, "service", "fashion", namespace)["spec"]["selector"] == {"slipway.dev/modeldeployment": "fashion"}

    plane.kubectl(
        "patch",
        "modeldeployment",
        "fashion",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"model":{"uri":"s3://models/fashion/v2"}}}',
    )
    testbed.wait_until("a canary Deployment", lambda: get(plane, "deployment", "fashion-canary", namespace), 60)
    # replicas {2, 4}: the stable track is the HPA's and keeps its 2; the canary's 10% is one pod beside them.
    assert get(plane, "deployment", "fashion-canary", namespace)["spec"]["replicas"] == 1
    assert get(plane, "deployment", "fashion-stable", namespace)["spec"]["replicas"] == 2
    hpa = get(plane, "horizontalpodautoscaler", "fashion-stable", namespace)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fashion-stable" and hpa["metadata"]["ownerReferences"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    scaling = status(plane, "modeldeployment", "fashion", namespace)["autoscaling"]
    assert scaling["metric"] == "cpu" and scaling["target"] == 70 and (scaling["min"], scaling["max"]) == (2, 4)

    # KWOK's pods run no server: the gate cannot read the canary's /metrics, and an unjudged canary goes back.
    def rolled_back() -> bool:
        return any(
            h.get("outcome") == "RolledBack"
            for h in status(plane, "modeldeployment", "fashion", namespace).get("history", [])
        )

    testbed.wait_until("the rollback", rolled_back, 90)
    st = status(plane, "modeldeployment", "fashion", namespace)
    assert "could not be read" in st["history"][0]["reason"] and st["current"]["modelUri"] == "s3://models/fashion/v1"
    testbed.wait_until(
        "the canary Deployment to go", lambda: not get(plane, "deployment", "fashion-canary", namespace), 60
    )
    testbed.wait_until(
        "2 stable replicas again",
        lambda: get(plane, "deployment", "fashion-stable", namespace)["spec"]["replicas"] == 2,
        60,
    )
    events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=fashion")
    assert "CanaryStarted" in events and "RolledBack" in events


def test_without_kuberay_a_run_stalls_naming_the_crd_and_resumes_once_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = testbed.ControlPlane(tmp_path / "k8s")  # a control plane of its own, without KubeRay's CRDs
    plane.start()
    try:
        # Without Slipway's own CRDs the operator does not start and wait in silence: it stops, saying what to do.
        early = subprocess.run(
            [str(Path(sys.executable).parent / "slipway"), "operator", "--namespace", "ml"],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig), "SLIPWAY_STORE": (tmp_path / "store").as_uri()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert early.returncode != 0
        assert "Slipway's CRDs are not installed" in early.stdout + early.stderr, early.stderr[-3000:]
        assert "kubectl apply -f crds/" in early.stdout + early.stderr
        plane.kubectl("apply", "--server-side", "-f", str(CRDS))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
        plane.kubectl("create", "namespace", "ml")
        monkeypatch.setenv("KUBECONFIG", str(plane.kubeconfig))
        monkeypatch.setenv("SLIPWAY_STORE", (tmp_path / "store").as_uri())
        monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")
        monkeypatch.delenv("SLIPWAY_METRICS_ADDRESS", raising=False)
        with KopfRunner(["run", "--standalone", "--namespace", "ml", "-m", "slipway_operator.handlers"]) as runner:
            plane.kubectl("apply", "-n", "ml", "-f", str(EXAMPLES / "auto-mpg" / "01-datasetprep.yaml"))
            testbed.wait_until(
                "Stalled",
                lambda: condition(status(plane, "datasetprep", "mpg", "ml"), "Stalled").get("status") == "True",
                60,
            )
            stalled = condition(status(plane, "datasetprep", "mpg", "ml"), "Stalled")
            assert stalled["reason"] == "KubeRayMissing" and "rayjobs.ray.io" in stalled["message"]
            assert "helm install kuberay-operator" in stalled["message"]
            crds = testbed.BIN / "kuberay-crds"
            plane.kubectl("apply", "--server-side", "-f", str(crds))
            testbed.wait_until("the RayJob once KubeRay is there", lambda: get(plane, "rayjob", "mpg-prep", "ml"), 90)
        assert runner.exit_code == 0
        assert "Traceback" not in runner.output, runner.output[-3000:]
    finally:
        plane.stop()


def test_credentials_stay_in_their_secret(
    kuberay_crds: testbed.ControlPlane,
    slipway_crds: testbed.ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's credentials reach pods only as a Secret reference: never in ConfigMaps, statuses, Events,
    children's specs or the operator's log."""
    plane = slipway_crds
    secret_value = "s3cr3t-VALUE-that-must-not-leak"
    plane.kubectl(
        "create", "secret", "generic", "store-creds", "-n", namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=slipway", f"--from-literal=AWS_SECRET_ACCESS_KEY={secret_value}",
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(plane.kubeconfig))
    monkeypatch.setenv("SLIPWAY_STORE", "s3://slipway-artifacts")
    monkeypatch.setenv("SLIPWAY_STORAGE_SECRET", "store-creds")
    monkeypatch.setenv("SLIPWAY_BACKEND", "kubernetes")
    monkeypatch.delenv("SLIPWAY_METRICS_ADDRESS", raising=False)
    prep = example("auto-mpg/01-datasetprep.yaml")
    prep["spec"]["source"] = {"uri": "s3://raw/mpg.csv", "format": "csv", "secretRef": "store-creds"}
    run = example("fashion-mnist/02-trainingrun.yaml")
    run["spec"]["dataset"] = {"uri": "s3://data/fashion"}
    serving = example("fashion-mnist/04-modeldeployment.yaml")
    serving["spec"]["model"] = {"uri": "s3://models/fashion/v1"}
    serving["spec"]["autoUpdate"] = {"enabled": False}
    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "slipway_operator.handlers"]) as runner:
        apply(plane, namespace, prep, run, serving)
        testbed.wait_until(
            "children of all three",
            lambda: all(
                get(plane, kind, name, namespace)
                for kind, name in (
                    ("rayjob", "mpg-prep"),
                    ("rayjob", "fashion-cnn-train"),
                    ("deployment", "fashion-stable"),
                )
            ),
            60,
        )
        job = get(plane, "rayjob", "mpg-prep", namespace)
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    # The store's Secret as it is, the source's own (here the same Secret) prefixed: neither replaces the other.
    assert worker["envFrom"] == [
        {"secretRef": {"name": "store-creds"}},
        {"secretRef": {"name": "store-creds"}, "prefix": "SOURCE_"},
    ]
    for kind in (
        "configmaps",
        "rayjobs",
        "deployments",
        "services",
        "events",
        "datasetprep",
        "trainingrun",
        "modeldeployment",
    ):
        assert secret_value not in plane.kubectl("get", kind, "-n", namespace, "-o", "yaml"), kind
    assert secret_value not in runner.output


def test_a_retrain_is_created_once_and_a_restarted_operator_that_lost_the_status_does_not_repeat_it(
    control_plane: testbed.ControlPlane, namespace: str, operator: tuple[Path, int]
) -> None:
    """autoUpdate.retrain on a schedule: the operator creates one TrainingRun of the template, labelled for the gate
    and owned by the deployment. The status is then wiped (as if the operator had died between creating the run
    and recording it) and the operator keeps going: it finds the run by its label and does not create a second;
    deleting the deployment deletes its runs."""
    plane = control_plane
    serving = example("fashion-mnist/04-modeldeployment.yaml")
    template = example("fashion-mnist/02-trainingrun.yaml")["spec"]
    serving["spec"]["model"] = {"uri": "s3://models/fashion/v1"}
    serving["spec"]["autoUpdate"] = {
        "enabled": True,
        "selector": {"matchLabels": {"app": "fashion"}},
        "retrain": {"trainingRun": template, "triggers": {"scheduleSeconds": 2}, "cooldownSeconds": 3600},
    }
    apply(plane, namespace, serving)

    def runs() -> list[dict[str, Any]]:
        found = plane.kubectl("get", "trainingruns", "-n", namespace, "-l", "slipway.dev/retrained-by=fashion", "-o",
                              "json")  # fmt: skip
        return list(json.loads(found)["items"])

    testbed.wait_until("a retrain TrainingRun", runs, 60)
    run = runs()[0]
    assert run["metadata"]["name"] == "fashion-retrain-1" and run["metadata"]["labels"]["app"] == "fashion"
    assert run["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert "schedule" in run["metadata"]["annotations"]["slipway.dev/retrain-reason"]
    assert run["spec"]["model"] == template["model"]
    testbed.wait_until(
        "the retrain in status",
        lambda: (status(plane, "modeldeployment", "fashion", namespace).get("retraining") or {}).get("runs"),
        30,
    )
    # Forget it, as an operator that died before writing the status would have.
    plane.kubectl("patch", "modeldeployment", "fashion", "-n", namespace, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"retraining": None}}))  # fmt: skip
    testbed.wait_until(
        "the status rebuilt from what exists",
        lambda: (status(plane, "modeldeployment", "fashion", namespace).get("retraining") or {}).get("runs"),
        30,
    )
    retraining = status(plane, "modeldeployment", "fashion", namespace)["retraining"]
    assert [r["name"] for r in retraining["runs"]] == ["fashion-retrain-1"]
    assert [r["metadata"]["name"] for r in runs()] == ["fashion-retrain-1"]
    events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=fashion")
    assert events.count("Retraining") == 1
    plane.kubectl("delete", "modeldeployment", "fashion", "-n", namespace)
    testbed.wait_until("the deployment's runs deleted with it", lambda: not runs(), 60)


@pytest.fixture
def tracking_uri(mlflow_server: mlflowserver.MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The operator's MLFLOW_TRACKING_URI (asked for before `operator`, which reads it when it starts)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server.uri


def test_the_registry_alias_follows_what_is_served_and_another_deployment_serves_it(
    control_plane: testbed.ControlPlane,
    namespace: str,
    mlflow_server: mlflowserver.MlflowServer,
    tracking_uri: str,
    operator: tuple[Path, int],
) -> None:
    plane = control_plane
    registered = f"fashion-{namespace}"
    staging = example("fashion-mnist/04-modeldeployment.yaml")
    staging["metadata"]["name"] = "staging"
    spec = staging["spec"]
    spec |= {"model": {"uri": "s3://models/fashion/v1"}, "autoUpdate": {"enabled": False}, "replicas": {"min": 1},
             "registry": {"name": registered}}  # fmt: skip
    spec["rollout"] = {"strategy": "rolling"}
    apply(plane, namespace, staging)

    def champion() -> str | None:
        seen = mlflow_server.read(f"""
try:
    v = client.get_model_version_by_alias({registered!r}, "champion")
    print(json.dumps([v.version, v.source]))
except mlflow.exceptions.MlflowException:
    print(json.dumps(None))
""")
        return None if seen is None else str(seen[1])  # type: ignore[index]

    testbed.wait_until("champion on v1", lambda: champion() == "s3://models/fashion/v1", 90)
    reg = status(plane, "modeldeployment", "staging", namespace)["registry"]
    assert reg["name"] == registered and reg["alias"] == "champion" and reg["version"] == "1"

    def serve(uri: str, **rollout: Any) -> None:
        patch = {"spec": {"model": {"uri": uri}, **({"rollout": rollout} if rollout else {})}}
        plane.kubectl("patch", "modeldeployment", "staging", "-n", namespace, "--type=merge", "-p", json.dumps(patch))

    serve("s3://models/fashion/v2")  # a rolling update: served once it is rolled out, and the alias moves
    testbed.wait_until("champion on v2", lambda: champion() == "s3://models/fashion/v2", 90)

    # A canary on KWOK has no /metrics to judge and is rolled back: registered as it started, the alias stays.
    serve("s3://models/fashion/v3", strategy="canary", canary={"steps": [50], "intervalSeconds": 3})

    def rolled_back() -> bool:
        st = status(plane, "modeldeployment", "staging", namespace)
        return any(h.get("outcome") == "RolledBack" for h in st.get("history", []))

    testbed.wait_until("the canary's rollback", rolled_back, 120)
    assert champion() == "s3://models/fashion/v2"

    serve("s3://models/fashion/v1", strategy="rolling", canary=None)  # back to the first model: its own version
    testbed.wait_until("champion back on v1", lambda: champion() == "s3://models/fashion/v1", 90)
    events = plane.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=staging")
    assert "AliasMoved" in events and "Registered" in events

    prod = example("fashion-mnist/04-modeldeployment.yaml")
    prod["metadata"]["name"] = "prod"
    prod["spec"] |= {"model": {"uri": f"models:/{registered}@champion"}, "autoUpdate": {"enabled": False},
                     "replicas": {"min": 1}, "rollout": {"strategy": "rolling"}}  # fmt: skip
    apply(plane, namespace, prod)
    testbed.wait_until(
        "prod Available", lambda: status(plane, "modeldeployment", "prod", namespace).get("phase") == "Available", 90
    )
    current = status(plane, "modeldeployment", "prod", namespace)["current"]
    assert current["modelUri"] == "s3://models/fashion/v1"
    assert current["source"] == f"models:/{registered}@champion (version 1)"
    seen = mlflow_server.read(f"""
print(json.dumps(sorted((v.version, v.source) for v in client.search_model_versions("name='{registered}'"))))
""")
    assert seen == [["1", "s3://models/fashion/v1"], ["2", "s3://models/fashion/v2"], ["3", "s3://models/fashion/v3"]]
