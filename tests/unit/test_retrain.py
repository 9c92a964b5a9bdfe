"""autoUpdate.retrain decides from what exists, not from memory: triggers, one run at a time, the cooldown, keep,
and an operator that died between creating a run and recording it neither forgets nor repeats it."""

from __future__ import annotations

from typing import Any

from slipway_operator.api.modeldeployment import ModelDeploymentSpec
from slipway_operator.controllers import retrain
from slipway_operator.controllers.modeldeployment import iso

T0 = 1_800_000_000.0
TEMPLATE = {
    "dataset": {"ref": "fashion-data"},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2},
}


def spec(**retraining: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"fromTrainingRun": "first"},
            "autoUpdate": {
                "enabled": True,
                "selector": {"matchLabels": {"app": "fashion"}},
                "retrain": {"trainingRun": TEMPLATE, "cooldownSeconds": 600, **retraining},
            },
        }
    )


OBJ = {"apiVersion": "slipway.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fashion",
       "namespace": "ml", "uid": "uid-md"}}  # fmt: skip


def health(fingerprint: str = "sha256:aaa", **conditions: tuple[str, str]) -> dict[str, Any]:
    return {
        "current": {"source": "TrainingRun/first", "lineage": {"datasetFingerprint": fingerprint}, "at": iso(T0)},
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{t} {r}"} for t, (s, r) in conditions.items()
        ],
    }


def dataset(fingerprint: str, phase: str = "Succeeded") -> dict[str, Any]:
    return {"kind": "DatasetPrep", "status": {"phase": phase, "fingerprint": fingerprint}}


def existing(created: dict[str, Any], phase: str | None, at: float) -> dict[str, Any]:
    """A run as the API server returns it after `created` was created at `at`."""
    return {
        **created,
        "metadata": {**created["metadata"], "creationTimestamp": iso(at)},
        "status": {"phase": phase} if phase else {},
    }


def test_a_new_dataset_version_creates_a_labelled_training_run_of_the_template() -> None:
    same = retrain.decide(OBJ, spec(), health(), [], dataset("sha256:aaa"), T0)
    assert same.create is None and same.status == {"runs": [], "nextAllowedAt": None, "waiting": None}
    decision = retrain.decide(OBJ, spec(), health(), [], dataset("sha256:bbb"), T0)
    run = decision.create
    assert run is not None and run["kind"] == "TrainingRun" and run["metadata"]["name"] == "fashion-retrain-1"
    assert run["metadata"]["labels"] == {"app": "fashion", retrain.RETRAINED_BY: "fashion"}  # the gate sees it
    assert run["metadata"]["annotations"][retrain.DATASET] == "sha256:bbb"
    assert "new dataset version sha256:bbb" in run["metadata"]["annotations"]["slipway.dev/retrain-reason"]
    assert run["metadata"]["ownerReferences"][0]["uid"] == "uid-md"
    assert run["spec"]["dataset"] == {"ref": "fashion-data"} and run["spec"]["training"]["epochs"] == 2
    assert decision.events[0][1] == "Retraining" and decision.status["runs"][0]["name"] == "fashion-retrain-1"
    assert retrain.decide(OBJ, spec(), health(), [], dataset("sha256:bbb", "Running"), T0).create is None


def test_a_run_that_exists_is_found_not_repeated_even_when_the_status_forgot_it() -> None:
    first = retrain.decide(OBJ, spec(), health(), [], dataset("sha256:bbb"), T0).create
    assert first is not None
    # The operator died after creating the run: the next pass sees the run (by label), the status says nothing.
    runs = [existing(first, None, T0)]
    again = retrain.decide(OBJ, spec(), health(), runs, dataset("sha256:bbb"), T0 + 5)
    assert again.create is None  # the fingerprint is the run's: no second retrain for it
    assert again.status is not None and again.status["runs"][0]["name"] == "fashion-retrain-1"
    # Quality drops while it runs: one at a time.
    dropped = health(Degraded=("True", "QualityDropped"))
    waiting = retrain.decide(OBJ, spec(), dropped, runs, dataset("sha256:bbb"), T0 + 10)
    assert waiting.create is None and "waiting for TrainingRun/fashion-retrain-1" in waiting.status["waiting"]
    # It finished; the cooldown (600 s from its creation) holds the next one back, then lets it go.
    done = [existing(first, "Succeeded", T0)]
    cooling = retrain.decide(OBJ, spec(), dropped, done, dataset("sha256:bbb"), T0 + 300)
    assert cooling.create is None and "cooldown" in cooling.status["waiting"]
    assert cooling.status["nextAllowedAt"] == iso(T0 + 600)
    later = retrain.decide(OBJ, spec(), dropped, done, dataset("sha256:bbb"), T0 + 601)
    assert later.create is not None and later.create["metadata"]["name"] == "fashion-retrain-2"
    assert "quality dropped" in later.create["metadata"]["annotations"]["slipway.dev/retrain-reason"]


def test_drift_and_schedule_trigger_only_when_asked() -> None:
    drifted = health(Drifted=("True", "DriftDetected"))
    assert retrain.decide(OBJ, spec(), drifted, [], None, T0).create is None  # drift is off by default
    on = spec(triggers={"drift": True})
    assert retrain.decide(OBJ, on, drifted, [], None, T0).create is not None
    weekly = spec(triggers={"scheduleSeconds": 3600})
    assert retrain.decide(OBJ, weekly, health(), [], None, T0 + 3000).create is None
    scheduled = retrain.decide(OBJ, weekly, health(), [], None, T0 + 3600)
    assert scheduled.create is not None and "schedule" in scheduled.events[0][2]


def test_finished_runs_beyond_keep_are_deleted_but_never_the_one_serving() -> None:
    template = retrain.decide(OBJ, spec(), health(), [], dataset("sha256:bbb"), T0).create
    assert template is not None

    def run(n: int) -> dict[str, Any]:
        named = {**template, "metadata": {**template["metadata"], "name": f"fashion-retrain-{n}"}}
        return existing(named, "Succeeded", T0 + n)

    runs = [run(n) for n in range(1, 6)]
    serving = health() | {"current": {"source": "TrainingRun/fashion-retrain-1", "lineage": {}}}
    decision = retrain.decide(OBJ, spec(keep=2), serving, runs, None, T0 + 10)
    deleted = sorted(name for _, _, name in decision.delete)
    assert deleted == ["fashion-retrain-2", "fashion-retrain-3"]  # 5 and 4 kept, 1 serves
    assert [r["name"] for r in decision.status["runs"]] == [
        "fashion-retrain-5",
        "fashion-retrain-4",
        "fashion-retrain-1",
    ]


def test_a_tuning_sweep_template_retrains_as_a_sweep() -> None:
    sweep = {
        "template": TEMPLATE,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "searchSpace": {"optimizer.learningRate": {"loguniform": [0.0001, 0.01]}},
        "maxTrials": 2,
    }
    on = ModelDeploymentSpec.model_validate(
        {
            "model": {"fromTrainingRun": "first"},
            "autoUpdate": {
                "enabled": True,
                "selector": {"matchLabels": {"app": "fashion"}},
                "retrain": {"tuningSweep": sweep},
            },
        }
    )
    created = retrain.decide(OBJ, on, health(), [], dataset("sha256:ccc"), T0).create
    assert created is not None and created["kind"] == "TuningSweep" and created["spec"]["maxTrials"] == 2
