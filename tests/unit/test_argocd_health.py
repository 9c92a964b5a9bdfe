"""The Argo CD health checks of gitops/argocd/slipway.dev/<Kind>/health.lua, run by a real Lua interpreter (lupa)
the way Argo CD runs them: Lua 5.1 (Argo CD embeds gopher-lua, a Lua 5.1), the resource as the global `obj`, the
chunk's return value the health. Cases come from Argo CD's test layout (health_test.yaml beside each script, inputs
under testdata/) and, for the runs, from the operator's own status code (runstatus.run_status).

The same fixtures check the Flux health expressions of gitops/flux/kustomization.yaml (CEL, evaluated by the CEL
implementation the operator already uses), and show why they exist: kstatus alone calls a failed run Current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from lupa import lua51, lua54

from slipway_operator.diagnosis import Diagnosis
from slipway_operator.runstatus import Observed, run_status

GITOPS = Path(__file__).resolve().parents[2] / "gitops"
HEALTH = GITOPS / "argocd" / "slipway.dev"
KINDS = ("DatasetPrep", "TrainingRun", "TuningSweep", "ModelDeployment")
RUNS = ("DatasetPrep", "TrainingRun", "TuningSweep")
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
NOW = "2026-11-26T10:00:00Z"


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON-like Python -> Lua tables, lists 1-based (as Argo CD converts the unstructured object). Integers become
    Lua numbers like Argo's float64s."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(type(value))


def health(kind: str, obj: dict[str, Any], lua: Any = lua51) -> dict[str, str]:
    runtime = lua.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute((HEALTH / kind / "health.lua").read_text())
    out = {key: result[key] for key in ("status", "message") if result[key] is not None}
    assert out.get("status") in STATUSES, out
    return out


def cases() -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
        for test in spec["tests"]:
            found.append((kind, test["inputPath"], test["healthStatus"]))
    return found


def test_one_script_per_kind_in_argo_cds_layout() -> None:
    assert sorted(p.name for p in HEALTH.iterdir()) == sorted(KINDS)
    for kind in KINDS:
        assert (HEALTH / kind / "health.lua").is_file()
        inputs = {f"testdata/{p.name}" for p in (HEALTH / kind / "testdata").glob("*.yaml")}
        tested = {path for k, path, _ in cases() if k == kind}
        assert inputs == tested, f"{kind}: every testdata file is in health_test.yaml and back"
    # The three runs share one script: kept identical so a fix lands in all of them.
    scripts = {(HEALTH / kind / "health.lua").read_text() for kind in RUNS}
    assert len(scripts) == 1


@pytest.mark.parametrize(("kind", "path", "expected"), cases(), ids=[f"{k}/{p}" for k, p, _ in cases()])
def test_argo_cd_test_fixtures(kind: str, path: str, expected: dict[str, str]) -> None:
    obj = yaml.safe_load((HEALTH / kind / path).read_text())
    assert obj["kind"] == kind
    assert health(kind, obj) == expected
    assert health(kind, obj, lua54) == expected  # nothing 5.1-only either


def run_obj(kind: str, observed: Observed, generation: int = 1, observed_generation: int = 1) -> dict[str, Any]:
    status = run_status(observed, [], observed_generation, NOW)
    return {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "r", "namespace": "ml", "generation": generation},
        "status": {
            "observedGeneration": observed_generation,
            "phase": str(status.phase),
            "message": status.message,
            "conditions": status.conditions,
            "progress": status.progress,
        },
    }


SUCCEEDED_JOB = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
RUN_CASES = [
    (Observed(ray_job=None), "Progressing"),
    (Observed(waiting_for="DatasetPrep d: Running"), "Progressing"),
    (Observed(ray_job={"jobDeploymentStatus": "Initializing"}), "Progressing"),
    (
        Observed(ray_job={"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, progress={"epoch": 1}),
        "Progressing",
    ),
    (Observed(ray_job={"jobDeploymentStatus": "Retrying"}), "Progressing"),
    (Observed(ray_job=SUCCEEDED_JOB), "Degraded"),  # no result.json where this operator looks: stuck, said why
    (
        Observed(ray_job={"jobDeploymentStatus": "Initializing"}, diagnosis=Diagnosis("ImagePullFailed", "x")),
        "Degraded",  # a pod that cannot start: Stalled, before the pending timeout fails the run
    ),
    (
        Observed(ray_job={"jobDeploymentStatus": "Initializing"}, diagnosis=Diagnosis("Unschedulable", "x", "fatal")),
        "Degraded",
    ),
    (Observed(ray_job={"jobDeploymentStatus": "Queued"}), "Progressing"),
    (Observed(ray_job=SUCCEEDED_JOB, result={"status": "Succeeded", "metrics": {"r2": 0.9}}), "Healthy"),
    (Observed(ray_job=SUCCEEDED_JOB, result={"status": "Failed", "reason": "NaNLoss"}), "Degraded"),
    (Observed(ray_job={"jobDeploymentStatus": "Failed"}), "Degraded"),
    (Observed(ray_job={"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}), "Degraded"),
    (Observed(invalid="training.epochz is not a field"), "Degraded"),
    (Observed(missing_crd="the RayJob CRD (rayjobs.ray.io)"), "Degraded"),
    (Observed(suspended=True), "Suspended"),
    (Observed(ray_job={"jobDeploymentStatus": "Suspended"}), "Suspended"),
]


@pytest.mark.parametrize("kind", RUNS)
@pytest.mark.parametrize(("observed", "expected"), RUN_CASES)
def test_runs_map_the_operators_own_statuses(kind: str, observed: Observed, expected: str) -> None:
    obj = run_obj(kind, observed)
    result = health(kind, obj)
    assert result["status"] == expected, (obj["status"]["phase"], result)
    assert result["message"]
    # A spec change the operator has not seen yet is progress, whatever the stored status says.
    stale = health(kind, run_obj(kind, observed, generation=2, observed_generation=1))
    assert stale == {"status": "Progressing", "message": "Waiting for the Slipway operator to observe generation 2"}


def test_a_status_without_conditions_or_metadata_generation_is_still_judged() -> None:
    bare = {"apiVersion": "slipway.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "r"}}
    assert health("TrainingRun", {**bare, "status": {"phase": "Failed"}}) == {"status": "Degraded", "message": "Failed"}
    assert health("TrainingRun", {**bare, "status": {}})["status"] == "Progressing"
    model = {**bare, "kind": "ModelDeployment", "status": {"phase": "Available", "observedGeneration": 1}}
    assert health("ModelDeployment", model) == {"status": "Healthy", "message": "Available"}


# --- Flux -----------------------------------------------------------------------------------------------------------

FLUX_FOR_ARGO = {"Healthy": "current", "Suspended": "current", "Degraded": "failed", "Progressing": "inProgress"}


def flux_expressions() -> dict[str, dict[str, str]]:
    kustomization = yaml.safe_load((GITOPS / "flux" / "kustomization.yaml").read_text())
    return {e["kind"]: e for e in kustomization["spec"]["healthCheckExprs"]}


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' generic rules for a custom resource (sigs.k8s.io/cli-utils pkg/kstatus/status: checkGeneration,
    checkGenericProperties, then Current): what Flux's `wait: true` concludes without healthCheckExprs."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    if generation is not None and "observedGeneration" in status and status["observedGeneration"] != generation:
        return "InProgress"
    for c in status.get("conditions", []):
        if c["type"] == "Reconciling" and c["status"] == "True":
            return "InProgress"
        if c["type"] == "Stalled" and c["status"] == "True":
            return "Failed"
    return "Current"


# A canary paused for want of traffic is Suspended to Argo CD; Flux has no such verdict and keeps waiting for it (up
# to the Kustomization's timeout), which is what a paused rollout asks of a pipeline.
PAUSED = {"testdata/canary-paused.yaml"}
FLUX_PAUSED = "inProgress"


@pytest.mark.parametrize(("kind", "path", "expected"), cases(), ids=[f"{k}/{p}" for k, p, _ in cases()])
def test_flux_health_expressions_agree_with_the_argo_cd_checks(kind: str, path: str, expected: dict[str, str]) -> None:
    expressions = flux_expressions()[kind]
    obj = yaml.safe_load((HEALTH / kind / path).read_text())
    if "status" not in obj:
        # Before the operator's first pass there is no `status` to read: Flux keeps waiting (until its timeout).
        with pytest.raises(RuntimeError):
            cel.evaluate(expressions["inProgress"], obj)
        return
    verdicts = {key: cel.evaluate(expressions[key], obj) for key in ("inProgress", "failed", "current")}
    wanted = FLUX_PAUSED if path in PAUSED else FLUX_FOR_ARGO[expected["status"]]
    assert [k for k, v in verdicts.items() if v] == [wanted], verdicts


def test_kstatus_alone_sees_failed_runs_but_misses_degraded_deployments() -> None:
    failed_run = yaml.safe_load((HEALTH / "TrainingRun" / "testdata" / "failed.yaml").read_text())
    degraded = yaml.safe_load((HEALTH / "ModelDeployment" / "testdata" / "degraded.yaml").read_text())
    assert kstatus(failed_run) == "Failed"  # a failed run is Stalled
    assert kstatus(run_obj("TrainingRun", Observed(result={"status": "Failed", "reason": "NaNLoss"}))) == "Failed"
    assert kstatus(degraded) == "Current"  # degraded serving may recover: not Stalled, so the health expressions
    # what kstatus does get right: runs in progress, Stalled (InvalidSpec, KubeRayMissing), unobserved specs
    for kind, name, verdict in [
        ("TrainingRun", "running", "InProgress"),
        ("TrainingRun", "kuberay-missing", "Failed"),
        ("TrainingRun", "spec-changed", "InProgress"),
        ("ModelDeployment", "canary", "InProgress"),
        ("ModelDeployment", "invalid", "Failed"),
    ]:
        assert kstatus(yaml.safe_load((HEALTH / kind / "testdata" / f"{name}.yaml").read_text())) == verdict
