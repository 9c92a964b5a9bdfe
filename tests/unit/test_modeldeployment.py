"""The ModelDeployment controller is a pure state machine: stored status + what was observed -> children, status,
Events. These tests walk it through deploy, rolling update, canary steps, promotion, rollback and autoUpdate."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway_operator import builders
from slipway_operator.api import ModelDeploymentStatus
from slipway_operator.api.modeldeployment import Autoscaling
from slipway_operator.backends import autoscaler
from slipway_operator.controllers import modeldeployment as md
from slipway_operator.controllers.common import Settings
from slipway_operator.servermetrics import Traffic, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = Settings(image="slipway/trainer:test", server_image="slipway/server:test", store_uri="s3://slipway")
T0 = 1_800_000_000.0


def deployment_resource(**spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / "fashion-mnist" / "04-modeldeployment.yaml").read_text())
    obj["metadata"] |= {"namespace": "ml", "uid": "uid-md", "generation": 1}
    obj["spec"]["rollout"].pop("shadow")  # the canary's own tests; the shadow stage has its own below
    obj["spec"]["replicas"] = {"min": 2}  # a fixed size; autoscaling has its own tests below
    obj["spec"] |= spec
    return obj


def run(name: str, uri: str, accuracy: float, phase: str = "Succeeded", kind: str = "TuningSweep") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name},
        "status": {
            "phase": phase,
            "modelUri": uri,
            "metrics": {"test_accuracy": accuracy},
            "lineage": {"tuningSweep": name, "datasetFingerprint": "sha256:f", "unknown": "dropped"},
        },
    }


def ready(deployment: dict[str, Any]) -> dict[str, Any]:
    """A Deployment as Kubernetes reports it once every replica of its template is ready."""
    n = deployment["spec"]["replicas"]
    return {
        **deployment,
        "metadata": {**deployment["metadata"], "generation": 1},
        "status": {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n},
    }


def healthy(requests: int = 200, errors: int = 0, p99_seconds: float = 0.01) -> Traffic:
    return Traffic(requests, errors, {p99_seconds: float(requests), math.inf: float(requests)}, {}, 1)


class World:
    """Applies plans the way the handler does and plays Kubernetes: Deployments become ready when asked."""

    def __init__(self, obj: dict[str, Any], source: dict[str, Any] | None) -> None:
        self.obj = obj
        self.source = source
        self.candidates: list[dict[str, Any]] = []
        self.deployments: dict[str, dict[str, Any]] = {}
        self.traffic: dict[str, Traffic | None] = {}
        self.now = T0
        self.events: list[tuple[str, str, str]] = []
        self.autoscaler: dict[str, Any] | None = None  # the HPA as the API server reports it

    def step(self, advance: float = 0.0, make_ready: bool = True) -> md.Plan:
        self.now += advance
        spec = md.ModelDeploymentSpec.model_validate(self.obj["spec"])
        source, waiting = md.source_of(spec, self.source)
        candidates = [m for m in (md.model_of(c) for c in self.candidates) if m is not None]
        observed = md.Observed(
            source=source,
            waiting_for=waiting,
            candidates=candidates,
            deployments={t: self.deployments.get(t) for t in (md.STABLE, md.CANARY, md.SHADOW)},
            traffic=dict(self.traffic),
            endpoint="http://fashion.ml.svc.cluster.local",
            now=self.now,
            autoscaler=self.autoscaler,
        )
        plan = md.plan(copy.deepcopy(self.obj), observed, SETTINGS)
        for child in plan.children:
            if child["kind"] == "Deployment":
                track = child["metadata"]["labels"]["slipway.dev/track"]
                self.deployments[track] = ready(child) if make_ready else child
        for _, _, name in plan.delete:
            self.deployments.pop(name.rsplit("-", 1)[1], None)
        ModelDeploymentStatus.model_validate(plan.status)  # every field set is one the CRD keeps
        self.obj["status"] = plan.status
        self.events += plan.events
        return plan

    def revision(self, track: str) -> str:
        return str(self.deployments[track]["metadata"]["labels"]["slipway.dev/revision"])

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.obj["status"]["conditions"] if c["type"] == type_)


def test_it_waits_for_its_model_source_and_then_serves_it_under_its_own_name() -> None:
    world = World(deployment_resource(), run("fashion-sweep", "s3://m/1", 0.90, phase="Running"))
    plan = world.step()
    assert plan.children == [] and world.obj["status"]["phase"] == "Waiting"
    assert world.condition("Ready")["reason"] == "WaitingForDependency"
    assert "TuningSweep fashion-sweep (Running)" in world.obj["status"]["message"]

    world.source = run("fashion-sweep", "s3://m/1", 0.90)
    plan = world.step(make_ready=False)
    kinds = sorted(c["kind"] for c in plan.children)
    assert kinds == ["ConfigMap", "Deployment", "Service", "Service", "Service"]
    peers = next(c for c in plan.children if c["metadata"]["name"] == "fashion-peers")
    assert peers["spec"]["clusterIP"] == "None"  # headless: its DNS name lists every server, for feedback
    shadows = next(c for c in plan.children if c["metadata"]["name"] == "fashion-shadow")
    assert shadows["spec"]["clusterIP"] == "None"
    assert shadows["spec"]["selector"] == {"slipway.dev/shadow-of": "fashion"}
    config = json.loads(next(c for c in plan.children if c["kind"] == "ConfigMap")["data"]["config.json"])
    assert config["peers"] == "dns://fashion-peers.ml.svc.cluster.local:8080"
    assert config["mirror"] == "dns://fashion-shadow.ml.svc.cluster.local:8080"
    assert world.obj["status"]["phase"] == "Deploying"
    assert world.deployments[md.STABLE]["spec"]["replicas"] == 2
    current = world.obj["status"]["current"]
    assert current["modelUri"] == "s3://m/1" and current["source"] == "TuningSweep/fashion-sweep"
    assert current["lineage"] == {"tuningSweep": "fashion-sweep", "datasetFingerprint": "sha256:f"}
    assert world.obj["status"]["modelName"] == "fashion"
    assert world.events[0][:2] == ("Normal", "FirstRevision")

    world.step()  # Kubernetes made the replicas ready
    world.step()
    assert world.obj["status"]["phase"] == "Available"
    assert world.condition("Ready")["status"] == "True" and world.condition("Available")["status"] == "True"
    assert world.obj["status"]["readyReplicas"] == "2/2"


def test_onnx_models_are_served_from_the_server_image_and_torchscript_from_the_trainer_image() -> None:
    for model_format, image in (("onnx", "slipway/server:test"), ("torchscript", "slipway/trainer:test")):
        world = World(deployment_resource(server={"format": model_format}), run("fashion-sweep", "s3://m/1", 0.9))
        world.step()
        assert world.deployments[md.STABLE]["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_gpus_put_the_server_on_cuda_and_a_slow_model_gets_a_startup_allowance_before_liveness_counts() -> None:
    for gpus, device in ((0, "cpu"), (1, "cuda")):
        resources = {"cpu": "1", "memory": "2Gi", "gpus": gpus}
        world = World(
            deployment_resource(resources=resources, server={"format": "torchscript", "startupTimeoutSeconds": 900}),
            run("fashion-sweep", "s3://m/1", 0.9),
        )
        plan = world.step()
        config_map = next(c for c in plan.children if c["kind"] == "ConfigMap")
        served = json.loads(next(iter(config_map["data"].values())))
        assert served["device"] == device
        container = world.deployments[md.STABLE]["spec"]["template"]["spec"]["containers"][0]
        assert ("nvidia.com/gpu" in container["resources"]["limits"]) == bool(gpus)
        startup = container["startupProbe"]
        assert startup["httpGet"]["path"] == "/v2/health/live"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 900  # the allowance asked for, at least


def serving_world(**spec: Any) -> World:
    world = World(deployment_resource(**spec), run("fashion-sweep", "s3://m/1", 0.90))
    world.step()
    world.step()
    assert world.obj["status"]["phase"] == "Available"
    return world


def test_a_new_model_with_the_rolling_strategy_is_a_rolling_update_of_the_stable_track() -> None:
    world = serving_world(rollout={"strategy": "rolling"})
    first = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/2", 0.91)
    plan = world.step(make_ready=False)
    assert world.revision(md.STABLE) != first and md.CANARY not in world.deployments
    assert world.obj["status"]["phase"] == "Deploying"
    assert world.obj["status"]["history"][0]["name"] == first
    assert world.obj["status"]["history"][0]["outcome"] == "Replaced"
    assert any(e[1] == "RollingUpdate" for e in plan.events)


def test_a_canary_steps_up_while_its_gate_holds_then_is_promoted() -> None:
    world = serving_world()
    stable = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    canary = world.revision(md.CANARY)
    assert canary != stable
    status = world.obj["status"]
    assert status["canaryWeight"] == 10 and status["canaryStep"] == 0 and status["phase"] == "Deploying"
    # 2 replicas: the canary gets one and the stable track keeps one until promotion
    assert world.deployments[md.CANARY]["spec"]["replicas"] == 1
    assert world.deployments[md.STABLE]["spec"]["replicas"] == 1
    assert world.deployments[md.CANARY]["metadata"]["annotations"]["slipway.dev/traffic-weight"] == "10"

    world.traffic[md.CANARY] = healthy()
    world.step(advance=30)  # before intervalSeconds (60): nothing is judged
    assert world.obj["status"]["canaryWeight"] == 10
    world.step(advance=31)
    assert world.obj["status"]["canaryWeight"] == 50 and world.events[-1][1] == "CanaryStep"
    assert "over 200 requests" in world.events[-1][2]
    world.traffic[md.CANARY] = healthy(requests=500)  # 300 more during the second step
    world.step(advance=61)
    assert world.obj["status"]["canaryWeight"] == 100 and "over 300 requests" in world.events[-1][2]
    world.traffic[md.CANARY] = healthy(requests=900)
    world.step(advance=61, make_ready=False)  # passes the last step: the stable track rolls to the canary
    status = world.obj["status"]
    assert status["current"]["name"] == canary and world.revision(md.STABLE) == canary
    assert status["history"][0] == {**status["history"][0], "name": stable, "outcome": "Replaced"}
    assert status["phase"] == "Deploying" and md.CANARY in world.deployments  # kept until stable is rolled out
    world.step()
    world.step()
    assert md.CANARY not in world.deployments
    assert world.obj["status"]["canary"] is None and world.obj["status"]["phase"] == "Available"
    assert [e[1] for e in world.events].count("Promoted") == 1


def test_a_canary_that_fails_its_gate_is_rolled_back_and_not_tried_again() -> None:
    world = serving_world()
    stable = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/bad", 0.95)
    world.step()
    bad = world.revision(md.CANARY)
    world.traffic[md.CANARY] = healthy(requests=100, errors=5)  # 5% > maxErrorRate 1%
    plan = world.step(advance=61)
    assert md.CANARY not in world.deployments and world.revision(md.STABLE) == stable
    status = world.obj["status"]
    assert status["canary"] is None and status["history"][0]["name"] == bad
    assert status["history"][0]["outcome"] == "RolledBack" and "error rate 5.00%" in status["history"][0]["reason"]
    assert plan.events[-1][:2] == ("Warning", "RolledBack")
    assert "rolled back" in status["message"]
    for _ in range(3):
        world.step(advance=61)
    assert md.CANARY not in world.deployments and world.obj["status"]["current"]["name"] == stable


def test_a_slow_canary_fails_on_p99_latency() -> None:
    world = serving_world()
    world.source = run("fashion-sweep", "s3://m/slow", 0.95)
    world.step()
    world.traffic[md.CANARY] = healthy(p99_seconds=0.5)  # p99 <= 500 ms > 100 ms
    world.step(advance=61)
    assert world.obj["status"]["history"][0]["outcome"] == "RolledBack"
    assert "p99 above maxP99LatencyMs 100 ms" in world.obj["status"]["history"][0]["reason"]


def test_a_canary_whose_servers_are_still_starting_is_not_judged_until_they_answer_or_their_startup_time_ends() -> None:
    world = serving_world()
    stable = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step(make_ready=False)
    for _ in range(3):  # past intervalSeconds (60), its pod not ready yet (image pull, model load): held
        world.step(advance=61, make_ready=False)
    assert world.obj["status"]["canary"] is not None and md.CANARY in world.deployments
    assert world.obj["status"]["history"] == [] and world.obj["status"]["canaryWeight"] == 10
    world.traffic[md.CANARY] = healthy()
    world.step(advance=1)  # its pod becomes ready
    assert world.obj["status"]["canaryWeight"] == 10
    world.step(advance=1)  # it answers: judged on what it served, steps up
    assert world.obj["status"]["canaryWeight"] == 50 and world.events[-1][1] == "CanaryStep"

    world.source = run("fashion-sweep", "s3://m/3", 0.93)  # a newer canary whose pod never becomes ready
    world.step(make_ready=False)
    world.step(advance=599, make_ready=False)
    assert md.CANARY in world.deployments and world.obj["status"]["canary"]["name"] == world.revision(md.CANARY)
    world.step(advance=2, make_ready=False)  # server.startupTimeoutSeconds (600) since its step started
    history = world.obj["status"]["history"][0]
    assert history["outcome"] == "RolledBack" and "no canary replica became ready within" in history["reason"]
    assert md.CANARY not in world.deployments and world.revision(md.STABLE) == stable


def test_auto_update_rolls_out_only_a_better_model_matching_the_selector() -> None:
    world = serving_world()
    world.candidates = [run("worse", "s3://m/w", 0.80, kind="TrainingRun")]
    world.step()
    assert md.CANARY not in world.deployments
    world.candidates.append(run("better", "s3://m/b", 0.93, kind="TrainingRun"))
    world.candidates.append(run("unfinished", "s3://m/u", 0.99, phase="Running", kind="TrainingRun"))
    world.step()
    assert world.obj["status"]["canary"]["source"] == "TrainingRun/better"
    assert any("autoUpdate: TrainingRun/better has test_accuracy=0.93" in e[2] for e in world.events)


def test_health_conditions_say_degraded_and_drifted() -> None:
    world = serving_world()
    world.traffic[md.STABLE] = Traffic(100, 10, {0.01: 100.0, math.inf: 100.0}, {"pixels": 0.5, "x": 0.01}, 2)
    world.step()
    status = world.obj["status"]
    assert status["phase"] == "Degraded"
    assert (
        world.condition("Degraded")["status"] == "True"
        and "error rate 10.00%" in world.condition("Degraded")["message"]
    )
    assert world.condition("Drifted")["status"] == "True" and "pixels" in world.condition("Drifted")["message"]
    assert status["drift"]["driftedFeatures"] == ["pixels"] and status["drift"]["score"] == 0.5
    assert status["traffic"] == {"requests": 100, "errorRate": 0.1, "p99LatencyMs": 10.0}


def test_replicas_split_by_weight_and_the_stable_track_keeps_one_until_promotion() -> None:
    assert md.replicas_for(10, 10) == (9, 1)
    assert md.replicas_for(10, 50) == (5, 5)
    assert md.replicas_for(4, 100) == (1, 4)
    assert md.replicas_for(1, 10) == (1, 1)


def test_server_metrics_are_summed_over_replicas_with_p99_from_the_buckets() -> None:
    text = """# TYPE slipway_inference_requests counter
slipway_inference_requests_total{code="200",model="m"} 98.0
slipway_inference_requests_total{code="500",model="m"} 2.0
slipway_inference_requests_total{code="200",model="other"} 1000.0
# TYPE slipway_inference_request_seconds histogram
slipway_inference_request_seconds_bucket{code="200",le="0.005",model="m"} 90.0
slipway_inference_request_seconds_bucket{code="200",le="0.01",model="m"} 98.0
slipway_inference_request_seconds_bucket{code="200",le="+Inf",model="m"} 98.0
slipway_inference_request_seconds_bucket{code="500",le="0.005",model="m"} 0.0
slipway_inference_request_seconds_bucket{code="500",le="0.01",model="m"} 0.0
slipway_inference_request_seconds_bucket{code="500",le="+Inf",model="m"} 2.0
# TYPE slipway_drift_score gauge
slipway_drift_score{feature="pixels",method="psi",model="m"} 0.3
"""
    one = parse(text, "m")
    assert (one.requests, one.errors, one.drift) == (100, 2, {"pixels": 0.3})
    assert one.quantile_ms(0.5) == 5.0 and math.isinf(one.quantile_ms(0.99) or 0.0)
    two = one.add(parse(text, "m"))
    assert (two.requests, two.errors, two.replicas) == (200, 4, 2) and two.error_rate == 0.02


def test_a_stable_servers_comparisons_with_a_shadow_are_read_summed_and_windowed() -> None:
    text = """# TYPE slipway_shadow_requests counter
slipway_shadow_requests_total{model="m",outcome="answered"} 40.0
slipway_shadow_requests_total{model="m",outcome="dropped"} 3.0
slipway_shadow_rows_total{model="m",task="regression"} 80.0
slipway_shadow_agreed_rows_total{model="m",task="regression"} 0.0
slipway_shadow_relative_difference_total{model="m",task="regression"} 4.0
"""
    two = parse(text, "m").add(parse(text, "m"))
    assert two.shadow == {"answered": 80, "dropped": 6, "rows": 160, "agreed": 0, "difference": 8} and two.shadow_task
    before = Traffic.of_counters(parse(text, "m").counters())
    window = two.since(before)
    assert window.shadow["rows"] == 80 and window.shadow_task == "regression"


def test_selectors_are_written_as_the_api_reads_them() -> None:
    selector = {
        "matchLabels": {"app": "fashion"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
    }
    assert md.selector_string(selector) == "app=fashion,tier in (a,b)"


def quality_text(model: str, rows: int, **metrics: float) -> str:
    lines = ["# TYPE slipway_live_quality gauge"]
    lines += [f'slipway_live_quality{{metric="{k}",model="{model}"}} {v}' for k, v in metrics.items()]
    lines += ["# TYPE slipway_live_quality_rows gauge", f'slipway_live_quality_rows{{model="{model}"}} {rows}']
    return "\n".join(lines) + "\n"


def test_live_quality_from_replicas_is_weighted_by_their_feedback_rows() -> None:
    a = parse(quality_text("m", 100, accuracy=0.9, macro_f1=0.8), "m")
    b = parse(quality_text("m", 300, accuracy=0.5, macro_f1=0.4), "m")
    both = a.add(b)
    assert both.quality_rows == 400 and both.quality["accuracy"] == 0.6 and round(both.quality["macro_f1"], 6) == 0.5
    c = parse(quality_text("m", 1, mae=2.0, rmse=3.0), "m").add(parse(quality_text("m", 3, mae=6.0, rmse=1.0), "m"))
    assert c.quality["mae"] == 5.0 and c.quality["rmse"] == math.sqrt((9 + 3) / 4)  # through the mean of squares
    assert parse(quality_text("other", 5, accuracy=1.0), "m").quality == {}


def test_live_quality_below_its_threshold_is_degraded_with_reason_quality_dropped() -> None:
    world = serving_world()
    world.obj["spec"]["monitoring"]["quality"] = {"metric": "accuracy", "threshold": 0.8, "minRows": 50}
    world.traffic[md.STABLE] = healthy()
    world.traffic[md.STABLE].quality, world.traffic[md.STABLE].quality_rows = {"accuracy": 0.6, "macro_f1": 0.5}, 40
    world.step()
    assert world.obj["status"]["phase"] == "Available"  # 40 rows are fewer than minRows: not judged yet
    assert world.obj["status"]["quality"]["metrics"] == {"accuracy": 0.6, "macro_f1": 0.5}
    assert world.obj["status"]["payloadUri"] == "s3://slipway/payloads/ml/fashion"  # the example logs payloads
    world.traffic[md.STABLE].quality_rows = 60
    world.step()
    status, degraded = world.obj["status"], world.condition("Degraded")
    assert status["phase"] == "Degraded" and degraded["reason"] == "QualityDropped"
    assert (
        "live accuracy 0.6 over the last 60 feedback rows is below monitoring.quality.threshold 0.8"
        in degraded["message"]
    )
    assert status["quality"]["rows"] == 60 and status["quality"]["checkedAt"]
    world.obj["spec"]["monitoring"]["quality"] = {"metric": "rmse", "threshold": 1.0}  # not a new revision
    world.step()
    assert world.condition("Degraded")["reason"] == "QualityNotMeasured"
    assert "measures accuracy, macro_f1" in world.condition("Degraded")["message"]


def test_a_canary_step_with_too_few_requests_pauses_is_never_promoted_and_resumes_when_traffic_comes() -> None:
    world = serving_world()
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    canary = world.revision(md.CANARY)
    world.traffic[md.STABLE] = healthy(requests=1000)
    world.traffic[md.CANARY] = healthy(requests=5)
    world.step(advance=61)
    status, paused = world.obj["status"], world.condition("Paused")
    assert status["canaryWeight"] == 10 and status["canary"]["name"] == canary  # holds its weight
    assert paused["status"] == "True" and paused["reason"] == "CanaryInconclusive"
    assert "5 requests reached the canary during the step; analysis.minRequests is 20" in paused["message"]
    assert f"slipway.dev/abort-canary={canary}" in paused["message"]
    assert world.events[-1][:2] == ("Warning", "CanaryInconclusive")
    for _ in range(5):  # no traffic, no judgement: never promoted, one Event
        world.step(advance=61)
    assert world.obj["status"]["canaryWeight"] == 10 and world.revision(md.STABLE) != canary
    assert [e[1] for e in world.events].count("CanaryInconclusive") == 1
    world.traffic[md.STABLE] = healthy(requests=1090)  # then traffic: 90 stable, 30 canary since the step began
    world.traffic[md.CANARY] = healthy(requests=30)
    world.step(advance=1)
    status = world.obj["status"]
    assert status["canaryWeight"] == 50 and world.condition("Paused")["status"] == "False"
    assert world.events[-1][1] == "CanaryStep"


def test_between_min_and_max_the_stable_tracks_autoscaler_owns_its_replicas_and_a_canary_follows_them() -> None:
    """replicas {2, 6}: an autoscaling/v2 HPA on the stable Deployment, which the operator then applies with the
    replicas the HPA set (never back to min); a canary at 20% gets a quarter of the stable pods beside them, so
    a fifth of all pods and of the requests, and follows the HPA on the next pass; status.autoscaling is what the
    HPA reports; lowering max to min removes the HPA."""
    world = serving_world(replicas={"min": 2, "max": 6}, autoscaling={"metric": "concurrency", "target": 8})
    plan = world.step()
    hpa = next(c for c in plan.children if c["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == world.deployments[md.STABLE]["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}

    def scaled_by_the_hpa(replicas: int) -> None:
        stable = world.deployments[md.STABLE]
        world.deployments[md.STABLE] = ready({**stable, "spec": {**stable["spec"], "replicas": replicas}})

    scaled_by_the_hpa(4)
    seen = {"type": "Pods", "pods": {"metric": {"name": "slipway_inference_in_flight"},
                                     "current": {"averageValue": "9500m"}}}  # fmt: skip
    world.autoscaler = {**hpa, "status": {"currentReplicas": 4, "desiredReplicas": 4, "currentMetrics": [seen]}}
    world.step()
    assert world.deployments[md.STABLE]["spec"]["replicas"] == 4  # the HPA's, not min
    scaling = world.obj["status"]["autoscaling"]
    assert scaling == {"min": 2, "max": 6, "metric": "concurrency", "target": 8, "current": 9.5,
                       "desiredReplicas": 4, "message": None}  # fmt: skip

    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.obj["spec"]["rollout"]["canary"]["steps"] = [20, 50]
    world.step()
    replicas = {track: world.deployments[track]["spec"]["replicas"] for track in (md.STABLE, md.CANARY)}
    assert replicas == {md.STABLE: 4, md.CANARY: 1}
    scaled_by_the_hpa(6)
    world.step(advance=1)
    replicas = {track: world.deployments[track]["spec"]["replicas"] for track in (md.STABLE, md.CANARY)}
    assert replicas == {md.STABLE: 6, md.CANARY: 2}
    assert "2 of 8 replicas" in world.obj["status"]["message"]
    assert (
        md.canary_alongside(6, 50, 6) == 6
        and md.canary_alongside(1, 10, 6) == 1
        and md.canary_alongside(3, 100, 6) == 6
    )

    world.obj["spec"]["replicas"] = {"min": 2}
    plan = world.step(advance=1)
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", "fashion-stable") in plan.delete
    assert not any(c["kind"] == "HorizontalPodAutoscaler" for c in plan.children)
    assert world.obj["status"].get("autoscaling") is None


def test_the_local_autoscaler_follows_the_hpa_rule() -> None:
    """ceil(replicas * average / target) within 10%, between min and max, up at once, down only as far as the
    highest recommendation of the stabilisation window."""
    rule = Autoscaling(metric="concurrency", target=4, scale_down_stabilization_seconds=60)
    hpa = builders.autoscaler(builders.Owner("v1", "ModelDeployment", "m", "ml", "u"), "stable", 1, 5, rule)
    replicas, history, status = autoscaler.decide(hpa, 1, 13.0, [], 0.0)
    assert replicas == 4 and status["desiredReplicas"] == 4  # ceil(1 * 13 / 4)
    assert status["currentMetrics"][0]["pods"]["current"] == {"averageValue": "13"}
    assert autoscaler.decide(hpa, 4, 4.3, history, 10.0)[0] == 4  # within the tolerance
    replicas, history, _ = autoscaler.decide(hpa, 4, 0.5, history, 20.0)
    assert replicas == 4  # the window still holds a recommendation of 4
    replicas, history, _ = autoscaler.decide(hpa, 4, 0.5, history, 75.0)
    assert replicas == 1  # 60 s later every recommendation in the window agrees
    assert autoscaler.decide(hpa, 2, 100.0, [], 80.0)[0] == 5  # at most max
    assert autoscaler.cores("250m") == 0.25 and autoscaler.cores("2") == 2.0 and autoscaler.cores(None) == 1.0
    same, _, waiting = autoscaler.decide(hpa, 2, None, [], 90.0)
    assert same == 2 and waiting["conditions"][0]["status"] == "False"
    assert (
        md.autoscaling_status(
            md.ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m"}, "replicas": {"min": 1, "max": 5}}),
            {**hpa, "status": waiting},
        )["message"]
        == "FailedGetMetrics: no metrics from the servers yet"
    )


def test_the_share_of_traffic_the_canary_actually_got_is_in_status() -> None:
    world = serving_world(replicas={"min": 2})
    world.traffic[md.STABLE] = healthy(requests=100)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    world.traffic[md.STABLE] = healthy(requests=150)  # 2 replicas: 10% is one replica of two, about half
    world.traffic[md.CANARY] = healthy(requests=50)
    world.step(advance=10)
    status = world.obj["status"]
    assert status["canaryTraffic"] == {"requests": 50, "share": 0.5, "errorRate": 0.0, "p99LatencyMs": 10.0}
    assert "1 of 2 replicas, 50% of requests so far" in status["message"]


def test_a_canary_is_aborted_by_annotating_its_revision() -> None:
    world = serving_world()
    stable = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    canary = world.revision(md.CANARY)
    world.obj["metadata"]["annotations"] = {md.ABORT_ANNOTATION: "some-other-revision"}
    world.step()
    assert md.CANARY in world.deployments
    world.obj["metadata"]["annotations"] = {md.ABORT_ANNOTATION: canary}
    world.step()
    history = world.obj["status"]["history"][0]
    assert md.CANARY not in world.deployments and world.revision(md.STABLE) == stable
    assert history["name"] == canary and history["outcome"] == "RolledBack" and "aborted" in history["reason"]


def test_a_step_window_restarts_when_a_replica_restarts_with_fresh_counters() -> None:
    before = Traffic(500, 0, {0.01: 500.0, math.inf: 500.0})
    assert healthy(requests=700).since(before).requests == 200
    restarted = healthy(requests=40)  # fewer than when the step began: the counters were reset
    window = restarted.since(before)
    assert (window.requests, window.errors) == (40, 0)
    assert Traffic.of_counters(before.counters()).buckets == before.buckets


def test_with_feedback_flowing_a_canary_much_worse_than_stable_is_rolled_back_on_live_quality() -> None:
    world = serving_world()
    world.obj["spec"]["monitoring"]["quality"] = {"metric": "accuracy", "threshold": 0.5, "minRows": 30}
    world.obj["spec"]["rollout"]["canary"]["analysis"]["maxQualityDrop"] = 0.02
    world.source = run("fashion-sweep", "s3://m/corrupt", 0.95)  # looks better on paper
    world.step()
    canary = world.revision(md.CANARY)

    def traffic(requests: int, accuracy: float, rows: int) -> Traffic:
        measured = healthy(requests=requests)
        measured.quality, measured.quality_rows = {"accuracy": accuracy, "macro_f1": accuracy}, rows
        return measured

    world.traffic[md.STABLE] = traffic(500, 0.85, 200)
    world.traffic[md.CANARY] = traffic(100, 0.40, 10)  # too few feedback rows to judge
    world.step(advance=61)
    assert world.condition("Paused")["status"] == "True"
    assert "needs 30 feedback rows on each track" in world.condition("Paused")["message"]
    world.traffic[md.CANARY] = traffic(150, 0.40, 60)
    world.step(advance=1)
    history = world.obj["status"]["history"][0]
    assert history["name"] == canary and history["outcome"] == "RolledBack"
    assert "live accuracy 0.4 (canary) vs 0.85 (stable): worse by 0.45, above maxQualityDrop 0.02" in history["reason"]


def group_text(model: str, groups: dict[str, tuple[int, float]]) -> str:
    lines = ["# TYPE slipway_live_quality_group gauge", "# TYPE slipway_live_quality_group_rows gauge"]
    for group, (rows, accuracy) in groups.items():
        lines.append(f'slipway_live_quality_group{{group="{group}",metric="accuracy",model="{model}"}} {accuracy}')
        lines.append(f'slipway_live_quality_group_rows{{group="{group}",model="{model}"}} {rows}')
    return "\n".join(lines) + "\n"


def test_a_canary_whose_live_quality_differs_too_much_between_the_groups_feedback_names_is_rolled_back() -> None:
    """Feedback naming each request's group: the replicas' windows are added up per group, the status shows each
    group and the largest gap among groups with minRows rows, and the canary's gap is a gate."""
    both = parse(group_text("m", {"F": (30, 0.9), "M": (10, 0.5)}), "m").add(
        parse(group_text("m", {"F": (10, 0.5), "X": (2, 0.1)}), "m")
    )
    assert both.groups["F"].quality_rows == 40 and both.groups["F"].quality["accuracy"] == pytest.approx(0.8)
    assert set(both.groups) == {"F", "M", "X"}

    world = serving_world()
    world.obj["spec"]["monitoring"]["quality"] = {"minRows": 20}
    world.obj["spec"]["autoUpdate"]["gate"]["maxFairnessGap"] = 0.1
    world.traffic[md.STABLE] = healthy()
    world.traffic[md.STABLE].groups = both.groups
    world.step()
    quality = world.obj["status"]["quality"]
    assert quality["groups"]["M"] == {"rows": 10, "metrics": {"accuracy": 0.5}}
    assert quality["fairnessGap"] is None  # only F has 20 rows
    world.traffic[md.STABLE].groups["M"].quality_rows = 25
    world.step()
    gap = world.obj["status"]["quality"]["fairnessGap"]
    assert gap["worst"] == "M" and gap["best"] == "F" and gap["gap"] == pytest.approx(0.3)

    world.source = run("fashion-sweep", "s3://m/unfair", 0.95)
    world.step()
    canary = world.revision(md.CANARY)
    unfair = healthy(requests=100)
    unfair.groups = {"F": Traffic(quality={"accuracy": 0.95}, quality_rows=40),
                     "M": Traffic(quality={"accuracy": 0.6}, quality_rows=40)}  # fmt: skip
    world.traffic[md.CANARY] = unfair
    world.step(advance=61)
    history = world.obj["status"]["history"][0]
    assert history["name"] == canary and history["outcome"] == "RolledBack", world.obj["status"]
    assert "live accuracy gap 0.35 between groups M (0.6, 40 rows) and F (0.95, 40 rows)" in history["reason"]
    assert "above autoUpdate.gate.maxFairnessGap 0.1" in history["reason"]


def test_a_better_candidate_with_a_wide_gap_between_groups_is_not_rolled_out_and_status_says_which() -> None:
    world = serving_world()
    world.obj["spec"]["autoUpdate"]["gate"]["maxFairnessGap"] = 0.05
    world.step()  # the gate's limit is not served config: no rollout for it
    assert md.CANARY not in world.deployments
    fair = {
        "sex": {"metric": "accuracy", "largest_gap": 0.02, "groups": {"F": {"accuracy": 0.9}, "M": {"accuracy": 0.92}}}
    }
    unfair = {
        "sex": {"metric": "accuracy", "largest_gap": 0.12, "groups": {"F": {"accuracy": 0.81}, "M": {"accuracy": 0.93}}}
    }
    spec = md.ModelDeploymentSpec.model_validate(world.obj["spec"])
    lopsided = md.model_of(run("lopsided", "s3://m/l", 0.99, kind="TrainingRun"))
    assert lopsided is not None
    observed = md.Observed(
        source=md.source_of(spec, world.source)[0],
        candidates=[md.Model(**{**lopsided.__dict__, "fairness": unfair})],
        deployments={t: world.deployments.get(t) for t in (md.STABLE, md.CANARY)},
        now=world.now,
    )
    plan = md.plan(copy.deepcopy(world.obj), observed, SETTINGS)
    assert not any(c["metadata"]["name"].endswith("-canary") for c in plan.children if c["kind"] == "Deployment")
    assert plan.status["rejected"] == [
        {
            "source": "TrainingRun/lopsided",
            "reason": "sex: accuracy gap 0.12 between F (0.81) and M (0.93) is above "
            "autoUpdate.gate.maxFairnessGap 0.05",
        }
    ]
    observed.candidates = [md.Model(**{**lopsided.__dict__, "fairness": fair})]
    plan = md.plan(copy.deepcopy(world.obj), observed, SETTINGS)
    assert plan.status["rejected"] == [] and plan.status["canary"]["source"] == "TrainingRun/lopsided"


SHADOWED = {"strategy": "canary", "canary": {"steps": [50, 100], "intervalSeconds": 60}, "shadow": {"minRequests": 50}}


def compared(requests: int, rows: int, agreed: int, task: str = "classification", **more: float) -> Traffic:
    """The stable track's /metrics once its servers compared `rows` answers with the shadow's."""
    traffic = healthy(requests=requests)
    traffic.shadow = {"answered": float(rows), "rows": float(rows), "agreed": float(agreed), **more}
    traffic.shadow_task = task
    return traffic


def test_a_candidate_in_shadow_gets_copies_users_get_stable_answers_and_it_passes_to_the_canary() -> None:
    world = serving_world(rollout=SHADOWED)
    stable = world.revision(md.STABLE)
    world.traffic[md.STABLE] = compared(requests=100, rows=0, agreed=0)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    status = world.obj["status"]
    candidate = world.revision(md.SHADOW)
    assert status["shadow"]["name"] == candidate != stable and status["canary"] is None
    assert md.CANARY not in world.deployments and world.deployments[md.STABLE]["spec"]["replicas"] == 2
    shadow_pods = world.deployments[md.SHADOW]["spec"]["template"]["metadata"]["labels"]
    assert "slipway.dev/modeldeployment" not in shadow_pods  # the users' Service never selects a shadow
    assert shadow_pods["slipway.dev/shadow-of"] == "fashion" and world.events[-1][1] == "ShadowStarted"

    world.traffic[md.STABLE] = compared(requests=300, rows=200, agreed=196)
    world.traffic[md.SHADOW] = healthy(requests=200)
    world.step(advance=30)  # before intervalSeconds: measured, not judged
    seen = world.obj["status"]["shadowTraffic"]
    assert seen["verdict"] == "Running" and seen["requests"] == 200 and seen["agreement"] == 0.98
    assert "200 copies answered so far" in world.obj["status"]["message"]
    world.step(advance=31)
    status = world.obj["status"]
    assert status["shadow"] is None and status["canary"]["name"] == candidate and status["canaryWeight"] == 50
    assert md.SHADOW not in world.deployments and world.revision(md.CANARY) == candidate
    assert status["shadowTraffic"]["verdict"] == "Passed"
    passed = next(e for e in world.events if e[1] == "ShadowPassed")[2]
    assert "agrees with the stable model on 98.00% of 200 rows" in passed


def test_a_shadow_that_disagrees_with_the_stable_model_is_rolled_back_before_any_user_sees_it() -> None:
    world = serving_world(rollout=SHADOWED)
    stable = world.revision(md.STABLE)
    world.source = run("fashion-sweep", "s3://m/bad", 0.95)
    world.step()
    bad = world.revision(md.SHADOW)
    world.traffic[md.STABLE] = compared(requests=300, rows=200, agreed=120)
    world.traffic[md.SHADOW] = healthy(requests=200)
    world.step(advance=61)
    status = world.obj["status"]
    assert md.SHADOW not in world.deployments and md.CANARY not in world.deployments
    assert status["current"]["name"] == stable and status["shadow"] is None
    assert status["history"][0]["name"] == bad and status["history"][0]["outcome"] == "RolledBack"
    assert "60.00% of 200 rows, below rollout.shadow.minAgreement 90.00%" in status["history"][0]["reason"]
    assert status["shadowTraffic"]["verdict"] == "Failed" and world.events[-1][:2] == ("Warning", "RolledBack")
    for _ in range(3):  # never tried again
        world.step(advance=61)
    assert md.SHADOW not in world.deployments and md.CANARY not in world.deployments


def test_a_regression_shadow_is_judged_on_relative_difference_and_a_quiet_one_pauses() -> None:
    world = serving_world(rollout=SHADOWED)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    candidate = world.revision(md.SHADOW)
    world.traffic[md.STABLE] = compared(requests=20, rows=10, agreed=0, task="regression", difference=0.3)
    world.traffic[md.SHADOW] = healthy(requests=10)
    world.step(advance=61)
    paused = world.condition("Paused")
    assert paused["status"] == "True" and paused["reason"] == "ShadowInconclusive"
    assert "10 copies of requests reached the shadow; rollout.shadow.minRequests is 50" in paused["message"]
    assert world.obj["status"]["shadowTraffic"]["verdict"] == "Inconclusive"
    assert world.revision(md.SHADOW) == candidate and world.obj["status"]["canary"] is None
    world.traffic[md.STABLE] = compared(requests=200, rows=100, agreed=0, task="regression", difference=25.0)
    world.traffic[md.SHADOW] = healthy(requests=100)
    world.step(advance=1)
    reason = world.obj["status"]["history"][0]["reason"]
    assert "mean relative difference from the stable model 0.25 over 100 rows" in reason
    assert "above rollout.shadow.maxRelativeDifference 0.1" in reason and md.SHADOW not in world.deployments


def test_a_shadow_is_aborted_by_annotation_and_a_canary_in_progress_gives_way_to_a_newer_shadow() -> None:
    world = serving_world(rollout={"strategy": "canary", "canary": {"steps": [50, 100]}})
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step()
    assert md.CANARY in world.deployments
    world.obj["spec"]["rollout"] = SHADOWED
    world.source = run("fashion-sweep", "s3://m/3", 0.93)
    world.step()
    newer = world.revision(md.SHADOW)
    assert md.CANARY not in world.deployments and "CanaryReplaced" in [e[1] for e in world.events]
    world.obj["metadata"]["annotations"] = {md.ABORT_ANNOTATION: newer}
    world.step()
    history = world.obj["status"]["history"][0]
    assert md.SHADOW not in world.deployments and history["name"] == newer and "aborted" in history["reason"]


def test_a_shadow_whose_servers_are_still_starting_is_not_judged_until_they_answer_or_their_startup_time_ends() -> None:
    world = serving_world(rollout=SHADOWED)
    world.source = run("fashion-sweep", "s3://m/2", 0.92)
    world.step(make_ready=False)
    for _ in range(3):  # past intervalSeconds, pods not ready yet (image pull, model load): held, not rolled back
        world.step(advance=61, make_ready=False)
    assert world.obj["status"]["shadow"] is not None and md.SHADOW in world.deployments
    world.step(advance=600, make_ready=False)  # server.startupTimeoutSeconds (600) since the stage started
    history = world.obj["status"]["history"][0]
    assert history["outcome"] == "RolledBack" and "no shadow replica became ready within" in history["reason"]
