"""A ModelDeployment and the MLflow model registry: `models:/<name>/<version>` and `models:/<name>@<alias>` as the
model to serve, and `spec.registry`, which keeps a version for every model the deployment rolls out and an alias on
the one it serves.

The calls go over MLflow's REST API (`slipway_trainer.mlflow_rest`, the standard library only), with the operator's
own credentials (MLflow's variables in its environment). `sync` talks to the server only when the registry is
behind what is served: a deployment in a steady state costs no request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slipway_operator.api.modeldeployment import ModelDeploymentSpec, RegistrySpec
from slipway_operator.controllers.revisions import LINEAGE_KEYS, Model
from slipway_trainer.mlflow_rest import Mlflow, MlflowError

REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z_][A-Za-z0-9_-]*))$")
TAG = "slipway.dev/"  # lineage and provenance tags of a version: slipway.dev/datasetFingerprint, ...
SERVABLE = ("s3://", "file://")  # a version whose source is a model folder Slipway's servers read
SERVED = ("Available", "Degraded")  # phases in which the stable revision is what the servers answer with (not
# Deploying: a rolling update or a promotion still rolling the stable track to it)


def is_registry_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("models:/")


def server_of(spec: ModelDeploymentSpec, default: str | None) -> str | None:
    """The MLflow server a deployment's registry calls go to: spec.registry.uri, else the operator's."""
    return (spec.registry.uri if spec.registry else None) or default


def resolve(uri: str, server: str | None, env: Mapping[str, str]) -> tuple[Model | None, str | None]:
    """(the model a `models:/` URI names now, or what serving it waits for, in words)."""
    parsed = REGISTRY_URI.match(uri)
    if parsed is None:  # the CRD's rule refuses these; a local manifest is checked by the same schema
        return None, f"{uri} is not models:/<name>/<version> or models:/<name>@<alias>"
    if not server:
        return None, f"an MLflow server for {uri}: set spec.registry.uri or the operator's MLFLOW_TRACKING_URI"
    name, version, alias = parsed["name"], parsed["version"], parsed["alias"]
    try:
        mlflow = Mlflow(server, env=env)
        found = mlflow.version(name, version) if version else mlflow.alias(name, alias)
    except MlflowError as err:
        return None, f"{uri} from the MLflow registry ({err})"
    if found is None:
        return None, f"{uri}: the alias {alias!r} of registered model {name!r} points at no version yet"
    source = str(found.get("source") or "")
    if not source.startswith(SERVABLE):
        return None, (
            f"{uri} is version {found.get('version')} of {name!r}, whose source {source!r} is not a model folder "
            "Slipway serves (s3:// or file://, as a ModelDeployment's spec.registry registers them)"
        )
    tags = {str(t["key"]): str(t.get("value", "")) for t in found.get("tags") or []}
    lineage = {k.removeprefix(TAG): v for k, v in tags.items() if k.removeprefix(TAG) in LINEAGE_KEYS}
    return Model(uri=source, source=f"{uri} (version {found.get('version')})", lineage=lineage), None


def live_revisions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The revisions served or being rolled out (stable, canary, shadow): revision name -> its record."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("current", "canary", "shadow"):
        record = status.get(key)
        if record and record.get("name") and record.get("modelUri"):
            out[str(record["name"])] = dict(record)
    return out


def behind(registry: RegistrySpec, status: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether the registry lacks a version of a live revision, or its alias is not on the served one (pure)."""
    known = dict(previous or {})
    if known.get("name") != registry.name or known.get("alias") != registry.alias:
        return bool(live_revisions(status))
    versions = known.get("versions") or {}
    live = live_revisions(status)
    current = status.get("current") or {}
    missing = [rev for rev in live if rev not in versions]
    served = versions.get(current.get("name", ""))
    moved = status.get("phase") in SERVED and bool(current) and (served is None or known.get("version") != served)
    return bool(missing) or moved


def sync(
    registry: RegistrySpec,
    server: str | None,
    status: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    where: str,
    env: Mapping[str, str],
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The registry status after bringing MLflow in step with `status` (what this pass serves and rolls out), and
    the Events to record. `where` is `<namespace>/<name>` of the deployment. Nothing is asked of the server when
    nothing is behind; a server that is down or refuses leaves the status as it was, with a message, and the next
    pass tries again. Serving never waits for the registry."""
    known = dict(previous or {})
    if known.get("name") != registry.name or known.get("alias") != registry.alias:
        known = {}
    out: dict[str, Any] = {
        "name": registry.name,
        "alias": registry.alias,
        "version": known.get("version"),
        "modelUri": known.get("modelUri"),
        "versions": {},
        "message": None,
    }
    live = live_revisions(status)
    out["versions"] = {rev: v for rev, v in (known.get("versions") or {}).items() if rev in live}
    if not behind(registry, status, known):
        out["message"] = known.get("message")
        return out, []
    events: list[tuple[str, str, str]] = []
    if not server:
        out["message"] = "no MLflow server: set spec.registry.uri or the operator's MLFLOW_TRACKING_URI"
        return out, _said_once(out["message"], known)
    try:
        mlflow = Mlflow(server, env=env)
        for rev, record in live.items():
            if rev not in out["versions"]:
                run_id = (record.get("lineage") or {}).get("mlflowRunId")
                version, new = mlflow.version_of(registry.name, str(record["modelUri"]), _tags(record, where), run_id)
                out["versions"][rev] = version
                if new:
                    model = record.get("source") or record["modelUri"]
                    said = f"{model} (revision {rev}) is version {version} of {registry.name}"
                    events.append(("Normal", "Registered", said))
        current = status.get("current") or {}
        served = out["versions"].get(current.get("name", ""))
        if served is not None and out["version"] != served and status.get("phase") in SERVED:
            mlflow.set_alias(registry.name, registry.alias, served)
            was = f" (was version {out['version']})" if out["version"] else ""
            events.append(("Normal", "AliasMoved", f"{registry.name}@{registry.alias} is version {served}, the "
                                                   f"served revision {current['name']}{was}"))  # fmt: skip
            out["version"], out["modelUri"] = served, current.get("modelUri")
    except MlflowError as err:
        out["message"] = f"the MLflow registry is behind what is served: {err}"
        return out, [*events, *_said_once(out["message"], known)]
    return out, events


def _tags(record: Mapping[str, Any], where: str) -> dict[str, str]:
    lineage = {f"{TAG}{k}": str(v) for k, v in (record.get("lineage") or {}).items() if v is not None}
    return {**lineage, f"{TAG}deployment": where, f"{TAG}revision": str(record["name"]),
            f"{TAG}source": str(record.get("source") or "")}  # fmt: skip


def _said_once(message: str, known: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [] if known.get("message") == message else [("Warning", "RegistryBehind", message)]
