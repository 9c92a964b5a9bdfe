"""DatasetPrep: a RayJob that runs the prep workload (its config on the Ray pods); with `spec.refresh`, a new one
per refresh round (`<name>-prep-r<k>`, progress and result under `_run/r<k>`) once the last one finished."""

from __future__ import annotations

import datetime
from typing import Any

from slipway_operator import builders
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.controllers.common import Desired, RunController, Settings, artifact_uri
from slipway_operator.runstatus import Observed
from slipway_operator.workloads import prep_config
from slipway_trainer import storage
from slipway_trainer.artifacts import Result

STEP = "prep"
ARTIFACT_FOLDER = "datasets"


def output_uri(settings: Settings, namespace: str, name: str, spec: DatasetPrepSpec) -> str:
    """Where the prepared dataset goes: `spec.output.uri`, or `<store>/datasets/<namespace>/<name>`."""
    return spec.output.uri or artifact_uri(settings, ARTIFACT_FOLDER, namespace, name)


def suffix(round_: int) -> str:
    """The RayJob's name suffix: `prep` for the first preparation, `prep-r<k>` for refresh k."""
    return STEP if round_ == 0 else f"{STEP}-r{round_}"


def desired_children(obj: dict[str, Any], settings: Settings, round_: int = 0) -> Desired:
    spec = DatasetPrepSpec.model_validate(obj["spec"])
    owner = builders.Owner.of(obj)
    output = output_uri(settings, owner.namespace, owner.name, spec)
    artifacts = run_folder(obj, settings, round_) if round_ else None
    config = prep_config(owner.name, spec, output, artifact_uri=artifacts, refresh=round_ > 0)
    job = builders.ray_job(
        owner,
        builders.Workload(
            step=STEP,
            name=suffix(round_),
            image=settings.image,
            resources=spec.resources,
            config=builders.config_text(config),
            storage_secret=settings.storage_secret,
            source_secret=spec.source.secret_ref,
            salt=spec.privacy.salt_secret_ref,
            gpu=settings.gpu,
        ),
    )
    return Desired([job])


def run_folder(obj: dict[str, Any], settings: Settings, round_: int = 0) -> str:
    """The workload writes its progress and result into `_run` next to the prepared dataset (`_run/r<k>` for
    refresh round k)."""
    meta = obj["metadata"]
    spec = DatasetPrepSpec.model_validate(obj["spec"])
    folder = storage.join(output_uri(settings, meta["namespace"], meta["name"], spec), "_run")
    return storage.join(folder, f"r{round_}") if round_ else folder


def dataset_fields(result: Result) -> dict[str, Any]:
    """The status fields that say which version is current and what it holds."""
    return {
        "outputUri": result.output_uri,
        "manifestUri": result.manifest_uri,
        "fingerprint": result.fingerprint,
        "version": result.version,
        "rows": result.rows,
        "droppedRows": result.dropped_rows or {},
    }


def version_entry(result: Result, at: str, round_: int) -> dict[str, Any]:
    rows = int((result.rows or {}).get("total", 0))
    return {
        "version": result.version,
        "fingerprint": result.fingerprint,
        "rows": rows,
        "createdAt": at,
        "round": round_,
    }


def status_fields(obj: dict[str, Any], settings: Settings, observed: Observed) -> dict[str, Any]:
    """Where the prepared dataset is and what it holds, once the prep succeeded."""
    result = observed.result
    if result is None or not result.succeeded:
        return {}
    status = obj.get("status") or {}
    fields = dataset_fields(result)
    fields["outputUri"] = output_uri(settings, obj["metadata"]["namespace"], obj["metadata"]["name"],
                                     DatasetPrepSpec.model_validate(obj["spec"]))  # fmt: skip
    if result.version and not status.get("versions"):
        fields["versions"] = [version_entry(result, result.finished_at or "", 0)]
    return fields


# -- refresh rounds ----------------------------------------------------------------------------------------------


def _at(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def next_refresh(obj: dict[str, Any]) -> str | None:
    """When the source is checked next: the last preparation's end plus `refresh.intervalSeconds`."""
    refresh = (obj.get("spec") or {}).get("refresh")
    status = obj.get("status") or {}
    last = (status.get("refresh") or {}).get("completionTime") or status.get("completionTime")
    if not refresh or not last:
        return None
    return _iso(_at(last) + datetime.timedelta(seconds=int(refresh["intervalSeconds"])))


def refresh_due(obj: dict[str, Any], now: str) -> bool:
    """A succeeded DatasetPrep with `spec.refresh`, no round running, and its next check due."""
    state = ((obj.get("status") or {}).get("refresh") or {}).get("state")
    due = next_refresh(obj)
    return state != "Running" and due is not None and _at(due) <= _at(now)


def round_started(obj: dict[str, Any], settings: Settings, round_: int, now: str) -> dict[str, Any]:
    """The status.refresh of a round that starts now."""
    return {
        "round": round_,
        "state": "Running",
        "message": f"round {round_}: checking the source for new content",
        "rayJobName": builders.suffixed(obj["metadata"]["name"], suffix(round_)),
        "logUri": storage.join(run_folder(obj, settings, round_), "logs", "driver.log"),
        "startTime": now,
        "completionTime": None,
        "nextTime": None,
        "pruned": [],
    }


def plan_versions(
    versions: list[dict[str, Any]], new: dict[str, Any], keep: int, protected: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(the versions kept, newest first; the version folders to remove): the newest `keep`, and any older one whose
    fingerprint is `protected` (a serving model was trained on it)."""
    ordered = [new] + [v for v in versions if v.get("version") != new.get("version")]
    kept = [v for i, v in enumerate(ordered) if i < keep or v.get("fingerprint") in protected]
    return kept, [str(v["version"]) for v in ordered if v not in kept]


def round_finished(
    obj: dict[str, Any], result: Result, now: str, protected: set[str]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """(the status patch, the Events) of a refresh round whose result is in; pure. The version folders to remove
    are in `status.refresh.pruned`."""
    status, spec = obj.get("status") or {}, obj["spec"]
    refresh = dict(status.get("refresh") or {})
    round_ = int(refresh.get("round", 0))
    refresh |= {"completionTime": now, "pruned": []}
    refresh["nextTime"] = next_refresh({"spec": spec, "status": {**status, "refresh": refresh}})
    if not result.succeeded:
        message = f"round {round_} failed ({result.reason}): {result.message}; the dataset keeps version " \
                  f"{status.get('version')}, the next round runs on schedule"  # fmt: skip
        refresh |= {"state": "Failed", "message": message}
        return {"refresh": refresh}, [("Warning", "RefreshFailed", message)]
    if not result.changed or result.version == status.get("version"):
        refresh |= {"state": "Unchanged", "message": f"round {round_}: the source did not change"}
        return {"refresh": refresh}, []
    entry = version_entry(result, now, round_)
    keep = int((spec.get("refresh") or {}).get("keepVersions", 3))
    kept, pruned = plan_versions(list(status.get("versions") or []), entry, keep, protected)
    rows, before = entry["rows"], status.get("version")
    message = f"round {round_}: new version {result.version} ({rows} rows; was {before})"
    if pruned:
        message += f"; removed {', '.join(pruned)} (past keepVersions {keep})"
    refresh |= {"state": "NewVersion", "message": message, "pruned": pruned}
    patch = {**dataset_fields(result), "outputUri": status.get("outputUri") or result.output_uri}
    return {**patch, "versions": kept, "refresh": refresh}, [("Normal", "NewVersion", message)]


def serving_fingerprints(deployments: list[dict[str, Any]]) -> set[str]:
    """The dataset fingerprints the current and canary revisions of these ModelDeployments were trained on."""
    found = set()
    for md in deployments:
        status = md.get("status") or {}
        for revision in (status.get("current"), status.get("canary")):
            fingerprint = ((revision or {}).get("lineage") or {}).get("datasetFingerprint")
            if fingerprint:
                found.add(str(fingerprint))
    return found


def finished_round(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The RayJob of the latest round (0: the first preparation), removed when the next one starts."""
    name = builders.suffixed(obj["metadata"]["name"], suffix(int(((obj.get("status") or {}).get("refresh") or {})
                                                                  .get("round", 0))))  # fmt: skip
    return [("ray.io/v1", "RayJob", name)]


def children_to_stop(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The first preparation's RayJob and the latest refresh round's."""
    name, round_ = obj["metadata"]["name"], int(((obj.get("status") or {}).get("refresh") or {}).get("round", 0))
    return [("ray.io/v1", "RayJob", builders.suffixed(name, suffix(r))) for r in sorted({0, round_})]


CONTROLLER = RunController(
    kind="DatasetPrep",
    step=STEP,
    artifact_folder=ARTIFACT_FOLDER,
    references=lambda spec: [],
    desired_children=lambda obj, found, settings: desired_children(obj, settings),
    status_fields=status_fields,
    artifacts=run_folder,
    stops=children_to_stop,
    refreshes=True,
)
