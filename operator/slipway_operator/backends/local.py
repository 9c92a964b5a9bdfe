"""The local backend: the children of Slipway resources as processes on this machine.

- ConfigMap: kept (under the state folder) for the inference servers that mount it.
- RayJob: `python -m slipway_trainer <step> --config <file>` with the config its Ray pods carry made to fit this
  machine (one worker, at most its CPUs, GPUs only where it has them). A training run trains in that process (no
  Ray Train for one worker); a sweep starts a local Ray for its trials. At most `max_jobs` run at once; the
  others wait in order (reported as jobDeploymentStatus `Queued`). A job killed by a signal (OOM killer, `kill`)
  starts again while its `maxFailures` allow, and resumes from its artifacts.
- Deployment: `replicas` inference-server processes (at most MAX_LOCAL_REPLICAS), each on a free loopback port;
  one that dies is started again on the next apply. A new revision starts new processes; the old ones stop once
  one of the new is ready (a rolling update without a gap).
- HorizontalPodAutoscaler: applied each time its Deployment is observed (`autoscaler`): the stable track's
  servers scale between its minReplicas and maxReplicas on their CPU or requests in flight.
- Service: a loopback router (`python -m slipway_operator.router`) splitting requests between the ready
  servers of the Deployments it selects: each Deployment's traffic weight, shared by its ready servers.

State lives under `state_dir/<namespace>/<kind>/<name>/` (config, log, pid, exit status, port), so an operator
restarted while its processes run adopts them instead of starting them twice. Processes run in their own
process group; stopping one stops what it started (its Ray included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slipway_operator.backends import autoscaler
from slipway_operator.builders import (
    CONFIG_ANNOTATION,
    HELD_ANNOTATION,
    KUEUE_QUEUE_LABEL,
    WEIGHT_ANNOTATION,
    job_config,
)
from slipway_trainer.artifacts import STEP_LABEL

STOP_GRACE_SECONDS = 30.0
MAX_LOCAL_REPLICAS = 16  # servers of one track on this machine, whatever the spec asks


def local_gpus() -> int:
    """GPUs the NVIDIA driver shows on this machine (none where there is no driver)."""
    path = Path("/proc/driver/nvidia/gpus")
    return len(list(path.iterdir())) if path.is_dir() else 0


# Runs the command and writes its exit status to the file named first, whoever its parent is: an operator that
# restarted (and so is not the parent) still learns how an adopted job ended. SIGTERM to the group reaches the
# command; the shell waits for it to finish (a server drains) before it records the status. Killed, it writes
# nothing.
_RECORD_EXIT = (
    'exit_file=$1; shift; trap : TERM; "$@"; code=$?; '
    'echo $code > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"; exit $code'
)


class Proc:
    """A process whose files live in one folder: config.json, log, pid, exit, ready.json.

    `pid` is the process group's leader (a shell that waits for the command and records its exit status)."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log"

    def record(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / "pid").read_text())
            return data
        except (OSError, json.JSONDecodeError):
            return {}

    @property
    def key(self) -> str | None:
        return self.record().get("key")

    def start(self, argv: list[str], key: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("exit", "ready.json"):
            (self.dir / name).unlink(missing_ok=True)
        with self.log.open("ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                ["/bin/sh", "-c", _RECORD_EXIT, "sh", str(self.dir / "exit"), *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopping it stops its Ray too
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        (self.dir / "pid").write_text(json.dumps({"pid": self.popen.pid, "key": key, "started": time.time()}))

    def alive(self) -> bool:
        if self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return True
            if not (self.dir / "exit").exists():
                (self.dir / "exit").write_text(str(code))
            return False
        pid = self.record().get("pid")
        if not pid or (self.dir / "exit").exists():
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def exit_code(self) -> int | None:
        try:
            return int((self.dir / "exit").read_text())
        except (OSError, ValueError):
            return None

    def port(self, key: str = "port") -> int | None:
        """The port it listens on (`grpcPort`: its gRPC port), once it wrote its ready file."""
        try:
            return int(json.loads((self.dir / "ready.json").read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def ready(self) -> bool:
        return self.alive() and self.port() is not None

    def pid(self) -> int | None:
        pid = self.popen.pid if self.popen is not None else self.record().get("pid")
        return int(pid) if pid else None

    def signal(self, number: signal.Signals) -> None:
        """``number`` to its whole process group (what it started, its Ray included)."""
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, number)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        stop_all([self], grace)


def stop_all(procs: list[Proc], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to every live one at once, one shared grace period, then SIGKILL to what is left: stopping n
    processes takes at most ``grace``, not n times it. What outlived the grace is said on stderr."""
    live = [p for p in procs if p.pid() and p.alive()]
    for proc in live:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.alive() for p in live) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in live:
        if proc.alive():
            print(f"slipway: {proc.dir} did not stop within {grace:.0f} s of SIGTERM; killed", file=sys.stderr)
        proc.signal(signal.SIGKILL)  # its group: a child that outlived its leader goes too
        if proc.popen is not None:
            proc.popen.wait()
            proc.alive()  # records the exit status


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _pod_names(key: str, replicas: int) -> list[str]:
    """The folders of a track's servers: `<config hash>` for the first, `<config hash>-<i>` for the others."""
    return [key if i == 0 else f"{key}-{i}" for i in range(replicas)]


def _pods_of(state: dict[str, Any]) -> list[str]:
    """A track's servers now; a state written before there were several lists only `current`."""
    return list(state.get("pods") or ([state["current"]] if state.get("current") and state.get("replicas") else []))


def _previous(state: dict[str, Any]) -> list[str]:
    """The servers of the config before, stopping once the new are ready (one name in an older state file)."""
    previous = state.get("previous") or []
    return [previous] if isinstance(previous, str) else list(previous)


def _volume_config_map(pod_spec: dict[str, Any]) -> str:
    return str(next(v["configMap"]["name"] for v in pod_spec["volumes"] if "configMap" in v))


class LocalBackend:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        cpus: int | None = None,
        gpus: int | None = None,
        max_jobs: int = 1,
        python: str = sys.executable,
        stop_on_close: bool = True,
    ) -> None:
        self.state = state_dir
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = local_gpus() if gpus is None else gpus
        self.max_jobs = max_jobs
        self.python = python
        self.stop_on_close = stop_on_close
        self.lock = threading.RLock()  # Kopf runs sync handlers in threads
        self.procs: dict[Path, Proc] = {}
        self.queue: list[Path] = []  # RayJob folders waiting for a free slot, in order
        self.measure = autoscaler.Measure()  # the servers' CPU samples between passes

    # -- files and processes ---------------------------------------------------------------------------------

    def _dir(self, kind: str, namespace: str, name: str) -> Path:
        return self.state / namespace / kind.lower() / name

    def _proc(self, folder: Path) -> Proc:
        if folder not in self.procs:
            self.procs[folder] = Proc(folder)
        return self.procs[folder]

    def _config_map(self, namespace: str, name: str) -> dict[str, Any]:
        path = self._dir("ConfigMap", namespace, name) / "config.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LookupError(f"ConfigMap {namespace}/{name} was not applied before the child that mounts it") from err
        return data

    def local_config(self, step: str, config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The workload's config made to fit this machine."""
        config = dict(config)
        if step == "prep":
            config["workers"] = min(int(config.get("workers") or 1), self.cpus)
        elif step == "train":
            # One worker trains in the job's own process: Ray Train would start a controller and a worker process
            # (~20 s on 2 cores) for nothing one local worker needs. A process killed mid-run is started again
            # instead (`maxFailures`), and resumes from its newest checkpoint as a Ray Train worker would.
            config |= {
                "useRay": False,
                "workers": 1,
                "gpusPerWorker": min(int(config.get("gpusPerWorker") or 0), self.gpus),
                "cpusPerWorker": min(float(config.get("cpusPerWorker") or 1), self.cpus),
            }
        elif step == "tune":
            config |= {
                "gpusPerTrial": min(int(config.get("gpusPerTrial") or 0), self.gpus),
                "cpusPerTrial": min(float(config.get("cpusPerTrial") or 1), self.cpus),
            }
        elif step == "serve":
            config |= {"host": "127.0.0.1", "port": 0, "readyFile": str(folder / "ready.json")}
            if config.get("grpcPort") is not None:  # any free port here too: the router knows it
                config["grpcPort"] = 0
            for key in ("peers", "mirror"):
                address = urlsplit(str(config.get(key) or ""))
                if address.scheme == "dns" and address.hostname:  # <service>.<namespace>.svc...: its table here
                    service, namespace = address.hostname.split(".")[:2]
                    routes = self.state / namespace / "service" / service / "routes.json"
                    config[key] = routes.resolve().as_uri()
            if not self.gpus:  # like the steps above: GPUs only where this machine has them
                config["device"] = "cpu"
        return config

    def _start(self, proc: Proc, step: str, config: dict[str, Any], key: str) -> None:
        proc.dir.mkdir(parents=True, exist_ok=True)
        (proc.dir / "config.json").write_text(json.dumps(config, indent=2))
        proc.start([self.python, "-m", "slipway_trainer", step, "--config", str(proc.dir / "config.json")], key)

    # -- RayJob ------------------------------------------------------------------------------------------------

    def _running_jobs(self) -> int:
        return sum(1 for folder, p in self.procs.items() if "rayjob" in folder.parts and p.alive())

    def _pump(self) -> None:
        while self.queue and self._running_jobs() < self.max_jobs:
            folder = self.queue.pop(0)
            desired = json.loads((folder / "desired.json").read_text())
            self._start(self._proc(folder), desired["step"], desired["config"], desired["key"])

    def _apply_ray_job(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        folder = self._dir("RayJob", meta["namespace"], meta["name"])
        step = meta["labels"][STEP_LABEL]
        text = job_config(job)
        if text is None:
            raise LookupError(
                f"RayJob {meta['namespace']}/{meta['name']} carries no workload config ({CONFIG_ANNOTATION})"
            )
        config = self.local_config(step, json.loads(text), folder)
        key = _hash([step, config])
        proc = self._proc(folder)
        folder.mkdir(parents=True, exist_ok=True)
        suspended = folder / "suspended"
        # No Kueue here (this backend queues jobs itself): a queued run's RayJob is suspended only when held.
        queued = KUEUE_QUEUE_LABEL in meta["labels"]
        if spec.get("suspend") and (not queued or (meta.get("annotations") or {}).get(HELD_ANNOTATION) == "true"):
            proc.stop()
            if folder in self.queue:
                self.queue.remove(folder)
            suspended.touch()
            return
        resumed = suspended.exists()
        suspended.unlink(missing_ok=True)
        if proc.key == key and not resumed and (proc.alive() or proc.exit_code() is not None or folder in self.queue):
            return  # adopted or already done: never started twice
        if proc.key != key:
            proc.stop()  # a changed config: the workload resumes from its artifacts
        (folder / "desired.json").write_text(json.dumps({"step": step, "config": config, "key": key}))
        for name in ("pid", "exit", "restarts"):
            (folder / name).unlink(missing_ok=True)
        if folder not in self.queue:
            self.queue.append(folder)
        self._pump()

    def _observe_ray_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        meta = job["metadata"]
        folder = self._dir("RayJob", meta["namespace"], meta["name"])
        if not folder.exists():
            return None
        self._pump()
        proc = self._proc(folder)
        if (folder / "suspended").exists():
            status = {"jobDeploymentStatus": "Suspended", "jobStatus": ""}
        elif folder in self.queue:
            ahead = self.queue.index(folder)
            status = {
                "jobDeploymentStatus": "Queued",
                "message": f"queued on this machine behind {ahead + self._running_jobs()} job(s) "
                f"(at most {self.max_jobs} at once)",
            }
        elif proc.alive() or self._restarted(folder, proc):
            status = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
        else:
            code = proc.exit_code()
            if code == 0:
                status = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
            else:
                why = "ended without an exit status" if code is None else f"exited with code {code}"
                status = {
                    "jobDeploymentStatus": "Complete",
                    "jobStatus": "FAILED",
                    "message": f"the workload process {why}; its log: {proc.log}",
                }
        return {**job, "status": status}

    def _restarted(self, folder: Path, proc: Proc) -> bool:
        """A job killed by a signal this backend did not send (the kernel's OOM killer, a person's `kill`) starts
        again while its `maxFailures` allow: the workload resumes from its artifacts. Whether it did."""
        code = proc.exit_code()
        if code is None or code <= 128:  # finished, failed on its own (a result says why), or never recorded
            return False
        desired = json.loads((folder / "desired.json").read_text())
        restarts = folder / "restarts"
        done = int(restarts.read_text()) if restarts.exists() else 0
        if done >= int(desired["config"].get("maxFailures") or 0):
            return False
        restarts.write_text(str(done + 1))
        with proc.log.open("a") as log:
            log.write(
                f"slipway: the workload was killed (signal {code - 128}); restart {done + 1} of at most "
                f"{desired['config']['maxFailures']}, from its newest checkpoint\n"
            )
        self._start(proc, desired["step"], desired["config"], desired["key"])
        return True

    # -- Deployment and Service ----------------------------------------------------------------------------------

    def _tracks(self, namespace: str, name: str) -> tuple[Path, dict[str, Any]]:
        folder = self._dir("Deployment", namespace, name)
        try:
            return folder, json.loads((folder / "deployment.json").read_text())
        except (OSError, json.JSONDecodeError):
            return folder, {}

    def _apply_deployment(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        folder, state = self._tracks(meta["namespace"], meta["name"])
        pod = spec["template"]["spec"]
        revision = meta.get("labels", {}).get("slipway.dev/revision", "")
        config = self._config_map(meta["namespace"], _volume_config_map(pod))
        key = _hash(config)
        state |= {
            "object": deployment,
            "labels": meta.get("labels", {}),
            "weight": float(meta.get("annotations", {}).get(WEIGHT_ANNOTATION, 100)),
            "revision": revision,
        }
        folder.mkdir(parents=True, exist_ok=True)
        self._scale(folder, state, key, config, min(int(spec.get("replicas") or 0), MAX_LOCAL_REPLICAS))

    def _scale(self, folder: Path, state: dict[str, Any], key: str, config: dict[str, Any], replicas: int) -> None:
        """Run `replicas` servers of `config` (its hash `key`) for a track, and remember them in its state file."""
        state["replicas"] = replicas
        pods, old = _pod_names(key, replicas), _pods_of(state)
        if state.get("current") != key:  # a new config: the old processes stop once one of the new is ready
            previous = [*_previous(state), *old]
            state["previous"] = [name for name in dict.fromkeys(previous) if name not in pods]
        else:  # scaled down: the last ones go
            stop_all([self._proc(folder / name) for name in old if name not in pods])
        state["current"], state["pods"] = key, pods
        if not replicas:
            stop_all([self._proc(folder / name) for name in _previous(state)])
            state.pop("previous", None)
        for name in pods:  # started, or started again when one died (a kubelet restarting a container)
            proc = self._proc(folder / name)
            if proc.key != key or not proc.alive():
                self._start(proc, "serve", self.local_config("serve", config, proc.dir), key)
        (folder / "deployment.json").write_text(json.dumps(state))

    def _autoscale(self, namespace: str, name: str, folder: Path, state: dict[str, Any]) -> None:
        """What a HorizontalPodAutoscaler of this Deployment would do this pass (see `autoscaler`)."""
        path = self._dir("HorizontalPodAutoscaler", namespace, name) / "hpa.json"
        try:
            held = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if not state.get("replicas") or state.get("previous"):  # stopped, or rolling to a new config: not now
            return
        ready = [proc for proc in (self._proc(folder / pod) for pod in _pods_of(state)) if proc.ready()]
        servers = [(int(proc.pid() or 0), int(proc.port() or 0)) for proc in ready]
        pod = state["object"]["spec"]["template"]["spec"]
        request = autoscaler.cores(pod["containers"][0].get("resources", {}).get("requests", {}).get("cpu"))
        metric = "cpu" if held["object"]["spec"]["metrics"][0]["type"] == "Resource" else "concurrency"
        average = self.measure.average(metric, servers, request)
        replicas, held["history"], status = autoscaler.decide(
            held["object"], int(state["replicas"]), average, held.get("history", []), time.time()
        )
        held["status"] = {**status, "lastScaleTime": held.get("status", {}).get("lastScaleTime")}
        if replicas != state["replicas"]:
            held["status"]["lastScaleTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            config = self._config_map(namespace, _volume_config_map(pod))
            self._scale(folder, state, str(state["current"]), config, replicas)
        path.write_text(json.dumps(held))

    def _observe_deployment(self, deployment: dict[str, Any]) -> dict[str, Any] | None:
        meta = deployment["metadata"]
        folder, state = self._tracks(meta["namespace"], meta["name"])
        if not state:
            return None
        self._autoscale(meta["namespace"], meta["name"], folder, state)
        pods = [self._proc(folder / name) for name in _pods_of(state)]
        ready = sum(1 for proc in pods if proc.ready())
        if ready and state.get("previous"):
            stop_all([self._proc(folder / name) for name in _previous(state)])
            state.pop("previous")
            (folder / "deployment.json").write_text(json.dumps(state))
        names = [*_pods_of(state), *_previous(state)]
        alive = sum(1 for name in names if self._proc(folder / name).alive())
        status: dict[str, Any] = {
            "observedGeneration": 1,
            "replicas": alive,
            "readyReplicas": ready,
            "updatedReplicas": ready,
        }
        exited = [proc for proc in pods if not proc.alive()]
        if exited:
            status["message"] = f"the server exited ({exited[0].exit_code()}); its log: {exited[0].log}"
        applied = state["object"]
        return {
            **applied,
            "metadata": {**applied["metadata"], "generation": 1},
            "spec": {**applied["spec"], "replicas": state["replicas"]},
            "status": status,
        }

    def _ready(self, namespace: str, name: str) -> list[Proc]:
        """The track's servers that answer, as the Endpoints of its ready pods."""
        folder, state = self._tracks(namespace, name)
        return [proc for proc in (self._proc(folder / pod) for pod in _pods_of(state)) if proc.ready()]

    def _sync_routes(self, namespace: str) -> None:
        for service_dir in (self.state / namespace / "service").glob("*"):
            try:
                selector = json.loads((service_dir / "selector.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            backends = []
            for deployment_dir in sorted((self.state / namespace / "deployment").glob("*")):
                _, state = self._tracks(namespace, deployment_dir.name)
                labels = state.get("labels", {})
                if state.get("replicas") and all(labels.get(k) == v for k, v in selector.items()):
                    ready = self._ready(namespace, deployment_dir.name)
                    for proc in ready:  # the track's weight shared by its ready servers
                        url = f"http://127.0.0.1:{proc.port()}"
                        backend = {
                            "url": url,
                            "weight": state["weight"] / len(ready),
                            "deployment": deployment_dir.name,
                        }
                        grpc = proc.port("grpcPort")
                        backends.append(backend | ({"grpc": f"127.0.0.1:{grpc}"} if grpc else {}))
            routes = service_dir / "routes.json"
            text = json.dumps({"backends": backends}, indent=2)
            if not routes.exists() or routes.read_text() != text:
                tmp = routes.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(routes)

    def _apply_autoscaler(self, hpa: dict[str, Any]) -> None:
        folder = self._dir("HorizontalPodAutoscaler", hpa["metadata"]["namespace"], hpa["metadata"]["name"])
        folder.mkdir(parents=True, exist_ok=True)
        try:
            held = json.loads((folder / "hpa.json").read_text())
        except (OSError, json.JSONDecodeError):
            held = {}
        (folder / "hpa.json").write_text(json.dumps({**held, "object": hpa}))  # its window and status stay

    def _apply_service(self, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        folder = self._dir("Service", meta["namespace"], meta["name"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "selector.json").write_text(json.dumps(service["spec"]["selector"]))
        self._sync_routes(meta["namespace"])
        if service["spec"].get("clusterIP") == "None":
            return  # headless: only its table of servers (a server's peers), no router
        proc = self._proc(folder)
        if not proc.alive():
            (folder / "ready.json").unlink(missing_ok=True)
            argv = [
                self.python,
                "-m",
                "slipway_operator.router",
                "--routes",
                str(folder / "routes.json"),
                "--ready-file",
                str(folder / "ready.json"),
            ]
            if any(port.get("name") == "grpc" for port in service["spec"].get("ports") or []):
                argv += ["--grpc-port", "0"]  # relays gRPC connections too
            proc.start(argv, "router")

    # -- the Backend interface -----------------------------------------------------------------------------------

    def workloads(self, namespace: str) -> list[dict[str, Any]] | None:
        return None  # no Kueue: this backend runs a few jobs at a time and queues the others itself

    def activate_workload(self, namespace: str, name: str, active: bool) -> None:
        raise NotImplementedError("the local backend has no Kueue Workloads")

    def missing_prerequisite(self) -> str | None:
        return None  # Ray comes with the trainer; `python -m slipway_trainer doctor` checks this machine

    def apply(self, children: list[dict[str, Any]], absent: bool = False) -> None:
        with self.lock:
            for child in children:
                meta = child["metadata"]
                if child["kind"] == "ConfigMap":
                    folder = self._dir("ConfigMap", meta["namespace"], meta["name"])
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "config.json").write_text(next(iter(child["data"].values())))
                elif child["kind"] == "RayJob":
                    self._apply_ray_job(child)
                elif child["kind"] == "Deployment":
                    self._apply_deployment(child)
                elif child["kind"] == "Service":
                    self._apply_service(child)
                elif child["kind"] == "HorizontalPodAutoscaler":
                    self._apply_autoscaler(child)
                else:
                    raise ValueError(f"the local backend cannot run a {child['kind']}")
            namespaces = {c["metadata"]["namespace"] for c in children}
            for namespace in namespaces:
                self._sync_routes(namespace)

    def observe(self, child: dict[str, Any], new: bool = False) -> dict[str, Any] | None:
        with self.lock:
            meta = child["metadata"]
            if child["kind"] == "RayJob":
                return self._observe_ray_job(child)
            if child["kind"] == "Deployment":
                found = self._observe_deployment(child)
                self._sync_routes(meta["namespace"])
                return found
            folder = self._dir(child["kind"], meta["namespace"], meta["name"])
            if child["kind"] == "HorizontalPodAutoscaler":
                try:
                    held = json.loads((folder / "hpa.json").read_text())
                except (OSError, json.JSONDecodeError):
                    return None
                return {**held["object"], "status": held.get("status") or {}}
            if child["kind"] == "ConfigMap":
                config = folder / "config.json"
                return {**child, "data": {"config.json": config.read_text()}} if config.exists() else None
            return {**child, "status": {}} if folder.exists() else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with self.lock:
            folder = self._dir(kind, namespace, name)
            mine = [path for path in self.procs if path == folder or folder in path.parents]
            if folder in self.queue:
                self.queue.remove(folder)
            adopted = [Proc(sub.parent) for sub in folder.glob("*/pid")]  # processes this operator did not start
            own = [Proc(folder)] if (folder / "pid").exists() else []
            stop_all([*(self.procs.pop(path) for path in mine), *adopted, *own])
            if folder.exists():  # its logs stay readable under .deleted/
                graveyard = folder.parent / ".deleted"
                graveyard.mkdir(exist_ok=True)
                folder.rename(graveyard / f"{name}-{int(time.time() * 1000)}")
            self._sync_routes(namespace)

    def endpoint(self, service: dict[str, Any]) -> str | None:
        meta = service["metadata"]
        port = self._proc(self._dir("Service", meta["namespace"], meta["name"])).port()
        return f"http://127.0.0.1:{port}" if port else None

    def grpc_endpoint(self, service: dict[str, Any]) -> str | None:
        meta = service["metadata"]
        port = self._proc(self._dir("Service", meta["namespace"], meta["name"])).port("grpcPort")
        return f"grpc://127.0.0.1:{port}" if port else None

    def scrape(self, deployment: dict[str, Any], path: str) -> tuple[list[str], str | None]:
        meta = deployment["metadata"]
        ready = self._ready(meta["namespace"], meta["name"])
        if not ready:
            return [], "no ready server"
        bodies, errors = [], []
        for proc in ready:  # each server's own counters, as from each pod
            url = f"http://127.0.0.1:{proc.port()}{path}"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    bodies.append(answer.read().decode())
            except OSError as err:
                errors.append(f"{url}: {err}")
        return bodies, "; ".join(errors) or None

    # Processes, not pods: what would be a pod's failure is the RayJob's own status (its exit code) and its log.
    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    def warnings(self, namespace: str, names: list[str]) -> list[dict[str, Any]]:
        return []

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        return ""

    def close(self) -> None:
        if not self.stop_on_close:
            return
        with self.lock:
            stop_all(list(self.procs.values()))
