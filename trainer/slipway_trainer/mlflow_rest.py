"""MLflow's tracking and registry REST API (2.0), spoken with the standard library.

Slipway logs runs to an MLflow tracking server and keeps registered model versions there when a user asks for it
(`MLFLOW_TRACKING_URI`, or a resource's `tracking.uri`). The REST API is small and stable, so both the
workloads and the operator use this module rather than the `mlflow` package (whose client brings FastAPI, the
Databricks SDK, GitPython and OpenTelemetry into every image). The tests check what it wrote through MLflow's own
client against a real `mlflow server`.

Credentials come from MLflow's own variables (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
`MLFLOW_TRACKING_PASSWORD`), which the operator fills from a Secret; they are sent as a header and never appear in
an error message.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT_SECONDS = 30.0
# The server's limits per log-batch request (MLflow's REST API documentation): MAX_METRICS is also the most of all
# three together.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_VALUE = 6000


class MlflowError(RuntimeError):
    """A request the server refused or could not be reached for; says which and why, never the credentials."""

    def __init__(self, message: str, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Mlflow:
    """One tracking server: `uri` is its base URL (http or https)."""

    uri: str
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.uri).scheme not in ("http", "https"):
            raise MlflowError(f"the MLflow tracking URI must be http(s)://host[:port], not {self.uri!r}")
        self.uri = self.uri.rstrip("/")

    # -- the wire ---------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "slipway"}
        token = self.env.get("MLFLOW_TRACKING_TOKEN")
        user, password = self.env.get("MLFLOW_TRACKING_USERNAME"), self.env.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        return headers

    def call(
        self, method: str, endpoint: str, body: Mapping[str, Any] | None = None, query: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """One request to `/api/2.0/<endpoint>`; the JSON answer, or MlflowError with the server's words."""
        url = f"{self.uri}/api/2.0/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text = answer.read().decode() or "{}"
        except urllib.error.HTTPError as err:
            said = _said(err.read().decode(errors="replace"))
            raise MlflowError(
                f"MLflow at {self.uri} refused {method} {endpoint} (HTTP {err.code}"
                + (f", {said.get('error_code')}" if said.get("error_code") else "")
                + f"): {said.get('message') or err.reason}",
                code=str(said.get("error_code") or ""),
                status=err.code,
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise MlflowError(f"MLflow at {self.uri} could not be reached for {endpoint}: {reason}") from None
        return json.loads(text)  # type: ignore[no-any-return]

    # -- tracking ---------------------------------------------------------------------------------------------

    def experiment(self, name: str) -> str:
        """The id of the experiment called `name`, made when it does not exist yet."""
        try:
            found = self.call("GET", "mlflow/experiments/get-by-name", query={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except MlflowError as err:
            if err.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            return str(self.call("POST", "mlflow/experiments/create", {"name": name})["experiment_id"])
        except MlflowError as err:  # made meanwhile by another run
            if err.code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self.call("GET", "mlflow/experiments/get-by-name", query={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])

    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, str] = {}) -> dict[str, Any]:
        """A new run (its `info`: run_id, artifact_uri, ...); `mlflow.parentRunId` in `tags` makes it a child."""
        body = {
            "experiment_id": experiment_id,
            "run_name": name,
            "start_time": _ms(),
            "tags": [{"key": k, "value": str(v)} for k, v in tags.items()],
        }
        return dict(self.call("POST", "mlflow/runs/create", body)["run"]["info"])

    def log(
        self,
        run_id: str,
        params: Mapping[str, Any] = {},
        metrics: Iterable[tuple[str, float, int]] = (),
        tags: Mapping[str, str] = {},
    ) -> None:
        """Parameters, metrics as (key, value, step) and tags, in as many log-batch requests as the limits need."""
        now = _ms()
        pending_params = [{"key": k[:250], "value": str(v)[:MAX_PARAM_VALUE]} for k, v in params.items()]
        pending_metrics = [
            {"key": k, "value": float(v), "timestamp": now, "step": int(s)}
            for k, v, s in metrics
            if isinstance(v, int | float) and math.isfinite(v)  # NaN or inf: nothing to plot
        ]
        pending_tags = [{"key": k, "value": str(v)} for k, v in tags.items()]
        while pending_params or pending_metrics or pending_tags:
            # Each kind within its own limit, and all of them together within MAX_METRICS (the server's total).
            params_now, tags_now = pending_params[:MAX_PARAMS], pending_tags[:MAX_TAGS]
            metrics_now = pending_metrics[: MAX_METRICS - len(params_now) - len(tags_now)]
            body = {"run_id": run_id, "params": params_now, "metrics": metrics_now, "tags": tags_now}
            pending_params = pending_params[len(params_now) :]
            pending_metrics = pending_metrics[len(metrics_now) :]
            pending_tags = pending_tags[len(tags_now) :]
            self.call("POST", "mlflow/runs/log-batch", body)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, context: str = "training") -> None:
        """The dataset version a run read, as the run's input (shown under "Datasets used" in MLflow's UI)."""
        dataset = {"name": name, "digest": digest[:36], "source_type": "slipway", "source": json.dumps({"uri": source})}
        body = {
            "run_id": run_id,
            "datasets": [{"tags": [{"key": "mlflow.data.context", "value": context}], "dataset": dataset}],
        }
        self.call("POST", "mlflow/runs/log-inputs", body)

    def end_run(self, run_id: str, failed: bool = False) -> None:
        body = {"run_id": run_id, "status": "FAILED" if failed else "FINISHED", "end_time": _ms()}
        self.call("POST", "mlflow/runs/update", body)

    def upload(self, artifact_uri: str, local: Path, under: str = "") -> int:
        """Files under `local` (or the one file) into the run's artifacts, through the server's artifact proxy
        (`mlflow server --serve-artifacts`, the default: runs' artifact URIs are `mlflow-artifacts:/...`); returns
        how many. A server that hands out another kind of artifact URI (s3://, gs://) is refused with what to do."""
        scheme, _, rest = artifact_uri.partition(":")
        if scheme != "mlflow-artifacts":
            raise MlflowError(
                f"the run's artifact location is {artifact_uri!r}: Slipway uploads artifacts through the tracking "
                "server (start it with --serve-artifacts and --artifacts-destination)"
            )
        base = rest.lstrip("/")
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            relative = path.name if path == local else path.relative_to(local).as_posix()
            target = "/".join(p for p in (base, under.strip("/"), relative) if p)
            url = f"{self.uri}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(target)}"
            headers = {**self._headers(), "Content-Type": "application/octet-stream"}
            request = urllib.request.Request(url, data=path.read_bytes(), method="PUT", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):
                    pass
            except urllib.error.HTTPError as err:
                said = _said(err.read().decode(errors="replace"))
                raise MlflowError(
                    f"MLflow at {self.uri} refused the artifact {relative} (HTTP {err.code}): "
                    f"{said.get('message') or err.reason}",
                    status=err.code,
                ) from None
            except (urllib.error.URLError, OSError) as err:
                raise MlflowError(f"MLflow at {self.uri} could not be reached for the artifact {relative}: "
                                  f"{getattr(err, 'reason', err)}") from None  # fmt: skip
        return len(files)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.uri}/#/experiments/{experiment_id}/runs/{run_id}"

    # -- registry ---------------------------------------------------------------------------------------------

    def register(self, name: str, source: str, run_id: str | None, tags: Mapping[str, str] = {}) -> str:
        """A new version of the registered model `name` (made if missing) from the model at `source`; its number."""
        try:
            self.call("POST", "mlflow/registered-models/create", {"name": name})
        except MlflowError as err:
            if err.code != "RESOURCE_ALREADY_EXISTS":
                raise
        body: dict[str, Any] = {"name": name, "source": source, "tags": [{"key": k, "value": str(v)}
                                                                          for k, v in tags.items()]}  # fmt: skip
        if run_id:
            body["run_id"] = run_id
        return str(self.call("POST", "mlflow/model-versions/create", body)["model_version"]["version"])

    def version_of(
        self, name: str, source: str, tags: Mapping[str, str] = {}, run_id: str | None = None
    ) -> tuple[str, bool]:
        """(the version of `name` whose source is `source`, whether it was registered now, with `tags` and linked to
        the MLflow run `run_id`, as there was none): the same model folder is one version however often it is served
        again."""
        if "'" not in source:  # MLflow's filter has no escape for a quote; such a folder is registered again
            query = {"filter": f"name='{name}' and source_path='{source}'", "max_results": "10"}
            try:
                found = self.call("GET", "mlflow/model-versions/search", query=query).get("model_versions") or []
            except MlflowError as err:
                if err.code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                found = []
            if found:
                return str(min(found, key=lambda v: int(v["version"]))["version"]), False
        return self.register(name, source, run_id, tags), True

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "mlflow/registered-models/alias", {"name": name, "alias": alias, "version": version})

    def alias(self, name: str, alias: str) -> dict[str, Any] | None:
        """The version `alias` points at (name, version, source, run_id, tags), or None when it points nowhere."""
        try:
            found = self.call("GET", "mlflow/registered-models/alias", query={"name": name, "alias": alias})
        except MlflowError as err:
            if err.code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or err.status == 404:
                return None
            raise
        return dict(found["model_version"])

    def version(self, name: str, version: str) -> dict[str, Any]:
        found = self.call("GET", "mlflow/model-versions/get", query={"name": name, "version": version})
        return dict(found["model_version"])


def _ms() -> int:
    return int(time.time() * 1000)


def _said(text: str) -> dict[str, Any]:
    try:
        said = json.loads(text)
    except ValueError:
        return {"message": " ".join(text.split())[:300]}
    return said if isinstance(said, dict) else {}
