"""`slipway run -f PATH`: the whole journey on this machine from the manifests a cluster would take.

Manifests are validated with the same models and rules as the CRDs, stored in a `LocalStore` (the API server's
stand-in), and reconciled by the same pass as the operator's (`reconcile`) with the local backend, until every
run has finished and the ModelDeployment serves. Finished steps of unchanged manifests are reused; a changed
spec runs its step again. Ctrl-C stops every process it started; `--detach` leaves the server running
(`slipway down` stops it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from slipway_operator.api.validation import InvalidManifest, validate_manifest
from slipway_operator.backends.local import LocalBackend, Proc
from slipway_operator.builders import suffixed
from slipway_operator.controllers import kinds
from slipway_operator.controllers.common import Settings
from slipway_operator.localstore import LocalStore
from slipway_operator.reconcile import Runtime, reconcile, stop_children
from slipway_trainer import storage
from slipway_trainer.artifacts import PROGRESS, Progress

PASS_SECONDS = 1.0
ROLLOUT_EVENTS = {
    "FirstRevision",
    "RollingUpdate",
    "ShadowStarted",
    "ShadowInconclusive",
    "ShadowPassed",
    "CanaryStarted",
    "CanaryStep",
    "CanaryInconclusive",
    "Promoting",
    "Promoted",
    "RolledBack",
}


class RunError(Exception):
    """A problem a person must fix, already in words."""


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Every manifest in the files and folders given, validated; RunError listing every invalid one."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        elif path.exists():
            files.append(path)
        else:
            raise RunError(f"{path}: no such file or folder")
    manifests, problems = [], []
    for file in files:
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text()) if d]
        except yaml.YAMLError as err:
            problems.append(f"{file}: not valid YAML: {err}")
            continue
        for doc in docs:
            try:
                validate_manifest(doc)
                manifests.append(doc)
            except InvalidManifest as err:
                problems.append(f"{file}: {err}")
    if problems:
        raise RunError("\n".join(problems))
    if not manifests:
        raise RunError(f"no Slipway manifests in {', '.join(map(str, paths))}")
    return order(manifests)


def references(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return kinds.BY_KIND[doc["kind"]].references(doc["spec"])


def order(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dependencies first; RunError for a reference to a resource that is not among the manifests."""
    names = {(d["kind"], d["metadata"]["name"]) for d in manifests}
    missing = [
        f"{d['kind']}/{d['metadata']['name']} needs {k}/{n}, which is not among the manifests"
        for d in manifests
        for k, n in references(d)
        if (k, n) not in names
    ]
    if missing:
        raise RunError("\n".join(missing))
    return sorted(manifests, key=lambda d: (kinds.ORDER[d["kind"]], d["metadata"]["name"]))


@dataclass
class Options:
    state: Path
    store: str | None = None
    serve: bool = True
    detach: bool = False
    report: bool = True
    tracking_uri: str | None = None  # MLflow: log runs and sweeps there (a resource's spec.tracking may override)


class Journey:
    """The resources of one `slipway run` and the runtime that drives them."""

    def __init__(self, options: Options, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        options.state.mkdir(parents=True, exist_ok=True)
        self.store = LocalStore(options.state)
        store_uri = options.store or (options.state / "artifacts").resolve().as_uri()
        self.backend = LocalBackend((options.state / "processes").resolve(), stop_on_close=True)
        self.runtime = Runtime(
            Settings(image="local", store_uri=store_uri, tracking_uri=options.tracking_uri), self.store, self.backend
        )
        self.display = Display(out)

    def admit(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store the manifests; a changed spec of an earlier run is run again from scratch."""
        objs = []
        for manifest in manifests:
            before = self.store.get("", manifest["kind"], "", manifest["metadata"]["name"])
            obj, changed = self.store.upsert(manifest)
            if changed and before is not None:
                self._forget(before)
                self.out.write(f"{obj['kind']}/{obj['metadata']['name']}: spec changed, it runs again\n")
            elif not changed and (obj.get("status") or {}).get("phase") == "Succeeded":
                self.out.write(f"{obj['kind']}/{obj['metadata']['name']}: unchanged and done earlier, reused\n")
            objs.append(obj)
        return objs

    def _forget(self, before: dict[str, Any]) -> None:
        """Stop the old run's processes and remove its result, so the workload does not return it again."""
        stop_children(before, self.runtime)
        artifacts = (before.get("status") or {}).get("artifactUri")
        if artifacts and before["kind"] in kinds.RUNS:
            with contextlib.suppress(OSError):
                storage.remove(artifacts)

    def step(self, objs: list[dict[str, Any]]) -> None:
        for obj in list(objs):
            outcome = reconcile(obj, self.runtime)
            if outcome is None:
                continue
            for type_, reason, message in outcome.events:
                self.store.event(obj, type_, reason, message)
            self.store.update_status(obj, outcome.status)
        self._adopt(objs)

    def _adopt(self, objs: list[dict[str, Any]]) -> None:
        """Resources a controller created (a ModelDeployment's retrain runs) join the journey; ones it deleted
        leave it, their processes stopped."""
        uids = {o["metadata"]["uid"] for o in objs}
        for obj in list(objs):
            if (obj["kind"], obj["metadata"]["name"]) not in self.store.objects:
                stop_children(obj, self.runtime)
                objs.remove(obj)
        for obj in list(self.store.objects.values()):
            owners = {r.get("uid") for r in obj["metadata"].get("ownerReferences") or []}
            if owners & uids and all(o is not obj for o in objs):
                self.out.write(f"{obj['kind']}/{obj['metadata']['name']}: created by its owner, it runs too\n")
                objs.append(obj)

    def failure(self, objs: list[dict[str, Any]]) -> str | None:
        for obj in objs:
            status = obj.get("status") or {}
            if status.get("phase") in ("Failed", "Invalid"):
                return (
                    f"{obj['kind']}/{obj['metadata']['name']} {status['phase']}: {status.get('message', '')}\n"
                    f"  its log: {log_path(self.options.state, obj) or '(none: it did not start)'}"
                )
        return None

    def done(self, objs: list[dict[str, Any]]) -> bool:
        for obj in objs:
            phase = (obj.get("status") or {}).get("phase")
            if obj["kind"] == "ModelDeployment":
                if phase not in ("Available", "Degraded"):
                    return False
            elif phase != "Succeeded":
                return False
        return True

    def start(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        objs = self.admit(manifests)
        return objs if self.options.serve else [o for o in objs if o["kind"] != "ModelDeployment"]

    def until_done(self, objs: list[dict[str, Any]]) -> str | None:
        """Reconcile until every run succeeded and every deployment serves; what failed, if something did."""
        while True:
            self.step(objs)
            self.display.show(objs)
            problem = self.failure(objs)
            if problem or self.done(objs):
                self.display.end()
                return problem
            time.sleep(PASS_SECONDS)

    def run(self, manifests: list[dict[str, Any]]) -> int:
        objs = self.start(manifests)
        try:
            problem = self.until_done(objs)
            if problem:
                self.out.write(f"\nstopped: {problem}\n")
                self.report(objs)
                return 1
            self.summary(objs)
            if not any(o["kind"] == "ModelDeployment" for o in objs):
                return 0
            if self.options.detach:
                self.backend.stop_on_close = False
                self.out.write("detached: the server keeps running; `slipway down` stops it\n")
                return 0
            self.out.write("serving until Ctrl-C\n")
            self.out.flush()
            while True:  # keep watching health and rollouts while serving
                time.sleep(5 * PASS_SECONDS)
                self.step(objs)
        except KeyboardInterrupt:
            self.display.end()
            self.out.write("\nstopping (Ctrl-C)...\n")
            return 130
        finally:
            self.backend.close()

    def summary(self, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            status = obj.get("status") or {}
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] == "ModelDeployment":
                endpoint = status.get("endpoint")
                self.out.write(
                    f"{name}: serving {status.get('modelName')} at {endpoint}\n"
                    f"  infer: POST {endpoint}/v2/models/{status.get('modelName')}/infer\n"
                )
                if status.get("grpcEndpoint"):
                    self.out.write(f"  grpc:  {status['grpcEndpoint']} (OIP v2: inference.GRPCInferenceService)\n")
                quality = status.get("quality") or {}
                if quality.get("rows"):
                    measured = ", ".join(f"{k} {v:.3f}" for k, v in sorted((quality.get("metrics") or {}).items()))
                    self.out.write(f"  live quality: {measured} over the last {quality['rows']} feedback rows\n")
                for event in self.store.events(obj["kind"], obj["metadata"]["name"]):
                    if event["reason"] in ROLLOUT_EVENTS:
                        self.out.write(f"  {event['reason']}: {event['message']}\n")
            else:
                self.out.write(f"{name}: {status.get('message', '')}\n")
        self.report(objs)

    def report(self, objs: list[dict[str, Any]]) -> None:
        """The HTML report of the journey as it stands (a failed step is reported as failed)."""
        if self.options.report:
            path = write_report(objs, self.options.state / "report")
            if path:
                self.out.write(f"report: {path}\n")


def write_report(objs: list[dict[str, Any]], folder: Path) -> Path | None:
    try:
        from slipway_operator.report import journey_report
    except ImportError:  # the report needs matplotlib (the trainer extra)
        return None
    path: Path = journey_report(objs, folder)
    return path


def log_path(state: Path, obj: dict[str, Any]) -> Path | None:
    """The log of a resource's process: its workload, or its stable server."""
    processes = state / "processes" / "default"
    name = obj["metadata"]["name"]
    if obj["kind"] in kinds.RUNS:
        path = processes / "rayjob" / suffixed(name, kinds.RUNS[obj["kind"]].step) / "log"
        return path if path.exists() else None
    track = processes / "deployment" / f"{name}-stable"
    try:
        current = str(json.loads((track / "deployment.json").read_text())["current"])
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    return track / current / "log"


class Display:
    """One line per resource: rewritten in place on a terminal, printed when it changes otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.shown = 0
        self.last: dict[str, str] = {}
        self.started = time.monotonic()

    def show(self, objs: list[dict[str, Any]]) -> None:
        lines = [line(o) for o in objs]
        if self.tty:
            if self.shown:
                self.out.write(f"\x1b[{self.shown}F")
            for text in lines:
                self.out.write(f"\x1b[2K{text[: shutil.get_terminal_size().columns - 1]}\n")
            self.shown = len(lines)
        else:
            elapsed = time.monotonic() - self.started
            for obj, text in zip(objs, lines, strict=True):
                key = f"{obj['kind']}/{obj['metadata']['name']}"
                if self.last.get(key) != text:
                    self.out.write(f"[{elapsed:5.0f}s] {text}\n")
                    self.last[key] = text
        self.out.flush()

    def end(self) -> None:
        self.shown = 0


def bar(done: float, total: float, width: int = 20) -> str:
    filled = int(width * min(max(done / total, 0.0), 1.0)) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def line(obj: dict[str, Any]) -> str:
    """What a person wants to see about a resource right now."""
    status = obj.get("status") or {}
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    phase = status.get("phase", "Pending")
    head = f"{name:<36} {phase:<10}"
    if phase in ("Succeeded", "Failed", "Invalid", "Waiting"):
        return f"{head} {status.get('keyMetric') or status.get('message', '')}"
    if obj["kind"] == "ModelDeployment":
        traffic = status.get("traffic") or {}
        extra = f"{traffic.get('requests', 0)} requests" if traffic.get("requests") else ""
        canary = f" canary {status['canaryWeight']}%" if status.get("canaryWeight") else ""
        if status.get("shadow"):
            copies = (status.get("shadowTraffic") or {}).get("requests", 0)
            canary = f" shadow {status['shadow'].get('name', '')} ({copies} copies)"
        return f"{head} {status.get('readyReplicas', '')} {status.get('endpoint') or ''}{canary} {extra}".rstrip()
    epoch, total = status.get("epoch"), status.get("totalEpochs")
    trials = status.get("trials") or {}
    if obj["kind"] == "TrainingRun" and epoch and total:
        return f"{head} {bar(epoch, total)} epoch {epoch}/{total} {progress_metrics(status)}".rstrip()
    if obj["kind"] == "TuningSweep" and trials:
        budget = int(obj["spec"].get("maxTrials", 1))
        return (
            f"{head} {bar(trials.get('completed', 0), budget)} {status.get('progress', '')} {progress_metrics(status)}"
        )
    return f"{head} {status.get('progress') or status.get('message', '')}"


def progress_metrics(status: dict[str, Any]) -> str:
    uri = status.get("artifactUri")
    if not uri:
        return ""
    try:
        where = storage.join(uri, PROGRESS)
        progress = Progress.read(storage.read_json(where), where)
    except (OSError, ValueError):  # not there yet, half-written, or of another version: no figures this time
        return ""
    shown = " ".join(
        f"{k}={v:.3f}" for k, v in (progress.metrics or {}).items() if k in ("val_loss", "val_accuracy", "val_mae")
    )
    if progress.best:  # a sweep: the best trial so far
        shown = "best " + " ".join(f"{k}={v:.3f}" for k, v in progress.best.items())
    eta = progress.eta_seconds
    return f"{shown} ETA {eta:.0f}s" if eta is not None else shown


def down(state: Path) -> int:
    """Stop every process `slipway run` left running (servers, routers, jobs); the number of resources whose
    processes were stopped. Logs stay where `slipway logs` finds them."""
    store = LocalStore(state)
    backend = LocalBackend((state / "processes").resolve())
    runtime = Runtime(Settings(image="local", store_uri=""), store, backend)
    stopped = 0
    for obj in store.objects.values():
        run = kinds.RUNS.get(obj["kind"])
        if run is None:
            stop_children(obj, runtime)
            stopped += 1
        else:
            jobs = state.resolve() / "processes" / "default" / "rayjob"
            job = Proc(jobs / suffixed(obj["metadata"]["name"], run.step))
            if job.alive():
                job.stop()
                stopped += 1
    return stopped
