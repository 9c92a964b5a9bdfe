"""The operator at scale: N TrainingRuns (default 300) applied at once, against the same RayJobs created directly
by one plain client, on the real test control plane (tests/cluster, loopback only).

What a user waits for after `kubectl apply` of many runs is that every run has its RayJob. Both sides start from
the same `kubectl apply --server-side` of one List of TrainingRuns (the fashion-mnist example with
`spec.dataset.uri` set, so no run waits for a DatasetPrep), each in its own namespace:

- baseline: one Python client (already started and connected) lists the TrainingRuns and creates the children
  the operator's own pure builders produce for each (`controllers.trainingrun.desired_children`, `stamp`ed as the
  operator stamps them: one RayJob), one request after another, as fast as it can;
- Slipway: `slipway operator --namespace NS` (a child process, started and watching before the apply) does it.

The operator's apply runs while the operator works, as it would for a user; both applies are timed.

Prints, side by side with the ratio operator/baseline: the time from the apply until all N RayJobs exist (and
until the first and half of them), the peak RSS of the process that made them (VmHWM from /proc: the baseline
client's own, the operator's), their CPU seconds, the CPU seconds of the API server and etcd over each side's
whole window (its apply included; the baseline's window comes first, on a fresh control plane), and the API
requests per TrainingRun, from kube-apiserver's `apiserver_request_total` by verb and resource, scraped before and
after. The counts leave out the apply itself (measured on the baseline's namespace), this script's polls, the
scrapes, and the control plane's background (its rate, measured in a quiet window once the garbage collector
watches the new kinds: before that, every ownerReference costs it GETs). The operator also reconciles every run
again on its resync interval, so a steady window follows (default 60 s): requests per TrainingRun per minute,
beside the baseline's runs left alone for a quiet window. Last, the TrainingRuns' phases and a summary of the
operator's own log (kopf's warnings and errors).
Outputs go to benchmarks/.out/ or `--out` (operator_scale.json, operator-scale/ with the operator's and the
components' logs); the control plane and the operator are stopped at the end whatever happened.

`--in-pod`: the operator is the chart's pod instead, on the test bed's real node (tests/cluster/node.py, with the
S3 store it reads and the operator image built from images/operator/Dockerfile), installed by helm with
tests/cluster/values-testbed.yaml and the chart's own defaults for the operator (8 workers, its resources),
watching the operator's namespace. Its process is found on this machine by its cgroup; its peak RSS is the
process's VmHWM and its container's memory.peak (page cache included: what the pod's memory limit counts). The
node reaches the API server through the test bed's userspace forwarder (tests/cluster/nodeproxy.py), which
takes CPU of the same 2 cores: the times in this mode include it, and its CPU seconds are printed.

The wait for the RayJobs stops at once, saying why, when the operator refuses the work (a run Invalid, Failed or
refused by the API server) or its process ends; `--refuse-file-uris` starts it without `--allow-file-uris`, so that
every run is Invalid: how the smoke test (tests/integration/test_benchmarks.py) checks this.

    python benchmarks/operator_scale.py [--runs 300] [--steady 60] [--timeout 900] [--in-pod] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / ".out"
TEMPLATE = REPO / "examples" / "fashion-mnist" / "02-trainingrun.yaml"
DATASET_URI = "file:///tmp/slipway-bench-data/fashion"  # never read: no pod runs
STORE = "file:///tmp/slipway-bench-store"
IMAGE = "slipway/trainer:bench"
BASE_NS, OP_NS = "bench-baseline", "bench-operator"
RAYJOBS = "rayjobs.ray.io"
TRAININGRUNS = "trainingruns.slipway.dev"
SERVING = [("server", "API server + etcd"), ("forwarder", "the test bed's forwarder")]
REFUSED = {"Invalid", "Failed"}  # a run's phases that say the operator will not make its RayJob

# (verb, what, HTTP code); `what` is resource.group[/subresource], or the path of a non-resource request.
Key = tuple[str, str, str]


def load_testbed() -> ModuleType:
    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    return importlib.import_module("testbed")


# ---------------------------------------------------------------------------------------------
# Reading the API server and the processes
# ---------------------------------------------------------------------------------------------

SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


class Scraper:
    """kube-apiserver's /metrics as the admin client: `apiserver_request_total` by (verb, resource, code), less the
    scrapes themselves (GET /metrics)."""

    def __init__(self, server: str, pki: Path) -> None:
        self.url = server + "/metrics"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def requests(self) -> Counter[Key]:
        with urllib.request.urlopen(self.url, context=self.context, timeout=30) as response:
            text = response.read().decode()
        counts: Counter[Key] = Counter()
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if not match:
                continue
            labels = dict(LABEL.findall(match.group("labels")))
            if labels.get("resource"):
                what = labels["resource"] + (f".{labels['group']}" if labels.get("group") else "")
                what += f"/{labels['subresource']}" if labels.get("subresource") else ""
            else:
                what = "/" + labels.get("subresource", "").lstrip("/")
            if what == "/metrics":
                continue
            counts[labels.get("verb", ""), what, labels.get("code", "")] += int(float(match.group("value")))
        return counts


def delta(after: Counter[Key], before: Counter[Key]) -> Counter[Key]:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)})


def attributed(
    window: Counter[Key], seconds: float, background: dict[Key, float], minus: Counter[Key] | None = None
) -> dict[Key, float]:
    """A window's requests less the background rate over its length and the requests known to be others'."""
    out: dict[Key, float] = {}
    for key in set(window) | set(background) | set(minus or {}):
        value = window.get(key, 0) - background.get(key, 0.0) * seconds - (minus or Counter()).get(key, 0)
        if abs(value) >= 0.5:
            out[key] = value
    return out


def as_dict(answer: object) -> dict[str, Any]:
    """The kubernetes client's custom-object calls return the decoded JSON, typed as object."""
    return cast(dict[str, Any], answer)


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (the test bed starts some components through a wrapper)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return total


def serving_cpu(plane: Any, operator: LocalOperator | PodOperator | None) -> dict[str, float]:
    """CPU seconds so far of what serves the requests: the API server and etcd ("server"), and with `--in-pod` the
    test bed's forwarder between the node and this machine ("forwarder")."""
    server = [c.pid for c in plane.components if c.name in ("kube-apiserver", "etcd") and c.pid]
    cpu = {"server": sum(tree_cpu_seconds(pid) for pid in server)}
    forwarder = operator.forwarder_pid() if operator is not None else None
    if forwarder is not None:
        cpu["forwarder"] = tree_cpu_seconds(forwarder)
    return cpu


def spent(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if k in before}


# ---------------------------------------------------------------------------------------------
# The manifests and the baseline client
# ---------------------------------------------------------------------------------------------


def training_runs(n: int, namespace: str) -> dict[str, Any]:
    template = yaml.safe_load(TEMPLATE.read_text())
    items = []
    for i in range(n):
        run = copy.deepcopy(template)
        run["metadata"] = {"name": f"run-{i:03d}", "namespace": namespace, "labels": {"app": "fashion"}}
        run["spec"]["dataset"] = {"uri": DATASET_URI}
        items.append(run)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def baseline_client(kubeconfig: str, namespace: str) -> int:
    """The baseline, in a process of its own so that its peak RSS is its own: connect, say `ready`, wait for
    `go` on stdin, then list the TrainingRuns and create each one's children (its RayJob), one after another."""
    from kubernetes import client, config

    from slipway_operator.controllers import trainingrun
    from slipway_operator.controllers.common import Settings, stamp

    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.list_namespaced_config_map(namespace, limit=1)  # the connection is open before the clock starts
    settings = Settings(image=IMAGE, store_uri=STORE, storage_secret=None)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF)
    runs = as_dict(custom.list_namespaced_custom_object("slipway.dev", "v1alpha1", namespace, "trainingruns"))["items"]
    created, jobs = 0, 0
    milestones: dict[str, float] = {}
    for run in runs:
        for child in stamp(trainingrun.desired_children(run, None, settings).children):
            assert child["kind"] == "RayJob", child["kind"]
            group, version = child["apiVersion"].split("/")
            custom.create_namespaced_custom_object(group, version, namespace, "rayjobs", child)
            jobs += 1
            if jobs == 1:
                milestones["first"] = time.monotonic() - start
            if jobs * 2 >= len(runs) and "half" not in milestones:
                milestones["half"] = time.monotonic() - start
            created += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "runs": len(runs),
        "created": created,
        "seconds": time.monotonic() - start,
        "milestones": milestones,
        "vmhwm_kib": proc_status_kib(os.getpid(), "VmHWM"),
        "cpu_seconds": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
    }
    print(json.dumps(report), flush=True)
    api.close()
    return 0


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, plane: Any, testbed: ModuleType, runs: int, work: Path) -> None:
        from kubernetes import client, config

        self.plane, self.testbed, self.runs, self.work = plane, testbed, runs, work
        self.scraper = Scraper(plane.server, plane.pki)
        self.api = config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(self.api)
        self.polls = 0
        self.run_polls = 0

    def count_rayjobs(self, namespace: str) -> int:
        """One LIST of one item: the rest is `remainingItemCount`."""
        self.polls += 1
        found = as_dict(self.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", limit=1))
        return len(found["items"]) + int(found["metadata"].get("remainingItemCount") or 0)

    def my_requests(self) -> Counter[Key]:
        """This script's own polls since the last reset (they land in the windows)."""
        polls, self.polls = self.polls, 0
        run_polls, self.run_polls = self.run_polls, 0
        return Counter({("LIST", RAYJOBS, "200"): polls, ("LIST", TRAININGRUNS, "200"): run_polls})

    def refused(self, namespace: str) -> str | None:
        """The first run the operator refused (Invalid, Failed, its child refused by the API server), in words."""
        self.run_polls += 1
        runs = as_dict(self.custom.list_namespaced_custom_object("slipway.dev", "v1alpha1", namespace, "trainingruns"))
        for run in runs["items"]:
            status = run.get("status") or {}
            stalled = [c for c in status.get("conditions") or [] if c.get("type") == "Stalled"]
            if status.get("phase") in REFUSED or any(c.get("reason") == "ApplyFailed" for c in stalled):
                name = f"{namespace}/{run['metadata']['name']}"
                return f"TrainingRun {name} is {status.get('phase')}: {status.get('message')}"
        return None

    def manifest(self, namespace: str) -> Path:
        path = self.work / f"trainingruns-{namespace}.json"
        path.write_text(json.dumps(training_runs(self.runs, namespace)))
        return path

    def start_apply(self, path: Path) -> subprocess.Popen[bytes]:
        """`kubectl apply --server-side` of the List, in the background (the operator works while it runs)."""
        log = path.with_suffix(".apply.log").open("wb")
        kubectl = self.testbed.binary("kubectl")
        argv = [kubectl, "--kubeconfig", str(self.plane.kubeconfig), "apply", "--server-side", "-f", str(path)]
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        return process

    @staticmethod
    def finish_apply(process: subprocess.Popen[bytes], path: Path) -> None:
        if process.wait(timeout=600) != 0:
            log = path.with_suffix(".apply.log").read_text(errors="replace")
            raise SystemExit(f"kubectl apply -f {path} failed ({process.returncode}):\n{log[-3000:]}")

    def wait_for_rayjobs(
        self,
        namespace: str,
        start: float,
        timeout: float,
        label: str,
        watch: Callable[[], str] | None = None,
        apply: subprocess.Popen[bytes] | None = None,
        refused: Callable[[], str | None] | None = None,
    ) -> tuple[float | None, dict[str, float], int]:
        """Poll every 0.5 s until N RayJobs exist: (seconds since `start`, or None on timeout; milestones, among
        them when a running `apply` ended; the count seen last). While no new RayJob has come for 2 s, `refused`
        is asked every 2 s whether the work was refused (a LIST of the runs: not while they move, to leave the
        figures alone); if it was, this stops the benchmark with its words."""
        milestones: dict[str, float] = {}
        count, grew, asked = 0, 0.0, 0.0
        while True:
            before, count = count, self.count_rayjobs(namespace)
            now = time.monotonic() - start
            grew = now if count > before else grew
            if apply is not None and apply.poll() is not None and "applied" not in milestones:
                milestones["applied"] = now
            if count and "first" not in milestones:
                milestones["first"] = now
            if count * 2 >= self.runs and "half" not in milestones:
                milestones["half"] = now
            extra = f", {watch()}" if watch else ""
            print(f"\r  {label}: {count}/{self.runs} RayJobs after {now:6.1f} s{extra}   ", end="", file=sys.stderr)
            if count >= self.runs:
                print(file=sys.stderr)
                return now, milestones, count
            if now > timeout:
                print(file=sys.stderr)
                return None, milestones, count
            if refused is not None and now - max(grew, asked) >= 2.0:
                asked = now
                why = refused()
                if why:
                    print(file=sys.stderr)
                    raise SystemExit(f"error: {label}: {count}/{self.runs} RayJobs after {now:.1f} s, and {why}")
            time.sleep(0.5)


class LocalOperator:
    """`slipway operator --namespace NS`, a child process of this script."""

    where = "a process on this machine"

    def __init__(self, plane: Any, work: Path, allow_file_uris: bool = True) -> None:
        slipway = Path(sys.executable).parent / "slipway"
        if not slipway.exists():
            raise SystemExit(f"{slipway} is missing: run this with the project's venv (make venv)")
        self.log_path = work / "operator.log"
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(plane.kubeconfig)
        # --allow-file-uris: the runs name a file:// dataset (no pod runs here); without it every run is Invalid
        argv = [str(slipway), "operator", "--namespace", OP_NS, "--store", STORE, "--image", IMAGE]
        argv += ["--allow-file-uris"] if allow_file_uris else []
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env)  # fmt: skip
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def memory_peak_kib(self) -> int | None:
        return None

    def forwarder_pid(self) -> int | None:
        return None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.stop()


class PodOperator:
    """The chart's operator pod on the test bed's real node (`--in-pod`), watching OP_NS."""

    where = "the chart's pod on the real node"

    def __init__(self, plane: Any, testbed: ModuleType, work: Path, allow_file_uris: bool = True) -> None:
        import node
        import release

        self.plane, self.release, self.log_path = plane, release, work / "operator.log"
        self.store = testbed.ObjectStore(work / "s3")
        self.node: Any = None
        self.exit_code: int | None = None
        self.stopped = False
        self.store.start()
        try:
            self.node = node.RealNode(plane, work / "node", s3_port=self.store.port)
            print("starting the real node and installing the chart (images are built when missing) ...",
                  file=sys.stderr)  # fmt: skip
            self.node.start()
            chart_defaults = {"operator.workers": "8", "operator.resources.requests.cpu": "100m",
                              "operator.resources.requests.memory": "256Mi",
                              "operator.resources.limits.memory": "1Gi"}  # fmt: skip
            sets = [f"watchNamespaces[0]={OP_NS}", f"operator.allowFileUris={str(allow_file_uris).lower()}"]
            sets += [f"{k}={v}" for k, v in chart_defaults.items()]
            release.install(plane, self.node, self.store, *(a for kv in sets for a in ("--set", kv)))
            testbed.wait_until("the operator's process on the real node", lambda: self._find_pid() is not None, 60)
            self.pid: int = self._find_pid() or 0
        except BaseException:
            self.close()
            raise

    def forwarder_pid(self) -> int | None:
        pid = next((c.pid for c in self.node.components if c.name == "nodeproxy"), None)
        return int(pid) if pid else None

    def _find_pid(self) -> int | None:
        for pid in sorted(self.node.cgroups.pids()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"operator" in argv and any(a.endswith(b"slipway") for a in argv):
                return pid
        return None

    def poll(self) -> int | None:
        if self.exit_code is None and not Path(f"/proc/{self.pid}").exists():
            self.exit_code = 1  # the container's process is gone (a crash, or the kubelet killed it)
        return self.exit_code

    def memory_peak_kib(self) -> int | None:
        """The container's peak memory as its cgroup counts it, what its memory limit is held against: cgroup v1's
        memory.max_usage_in_bytes, or v2's memory.peak."""
        try:
            lines = Path(f"/proc/{self.pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                peak = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.max_usage_in_bytes"
            elif controllers == "":
                peak = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.peak"
            else:
                continue
            if peak.exists():
                return int(peak.read_text()) // 1024
        return None

    def stop(self) -> int:
        """The pod's log kept (its previous container's too, if the kubelet restarted it), then `helm uninstall`;
        once. 0, or 1 if its process had gone before."""
        if not self.stopped:
            self.stopped = True
            logs = ("logs", "-n", self.release.NAMESPACE, "-l", "app.kubernetes.io/name=slipway", "--tail=-1")
            previous = self.plane.kubectl(*logs, "--previous", check=False)
            self.log_path.write_text(previous + self.plane.kubectl(*logs, check=False))
            code = self.poll() or 0
            self.release.uninstall(self.plane)
            self.exit_code = code
        return self.exit_code or 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.store.stop()


def watching(scraper: Scraper, resource: str, scope: str) -> bool:
    """True once a watch on `resource` (plural) with `scope` ("namespace": the operator's; "cluster": the garbage
    collector's and the quota controller's) is open."""
    with urllib.request.urlopen(scraper.url, context=scraper.context, timeout=30) as response:
        text = response.read().decode()
    pattern = re.compile(
        rf'^apiserver_longrunning_requests\{{[^}}]*resource="{resource}"[^}}]*scope="{scope}"[^}}]*verb="WATCH"'
        r"[^}]*\} (\S+)$",
        re.MULTILINE,
    )
    return any(float(v) >= 1 for v in pattern.findall(text))


LEVEL = re.compile(
    r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*\]|^(DEBUG|INFO|WARNING|ERROR|CRITICAL):"
    r"|\"(?:levelname|severity)\": \"(\w+)\""
)
# Problems in lines that carry no level (kopf's messages as the operator may print them bare).
TROUBLE = re.compile(
    r"error|exception|traceback|warning|orphaned|not exit|retry|retrying|throttl|timed? ?out|refused|\b[1-9]\d* failed",
    re.IGNORECASE,
)


def log_summary(text: str) -> dict[str, Any]:
    """Lines per level (where the format has one), tracebacks, the most frequent messages and the troubling ones
    (WARNING and up, or a word of trouble in a line without a level), names and numbers folded."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    trouble: Counter[str] = Counter()
    for line in text.splitlines():
        match = LEVEL.search(line)
        level = next((g for g in match.groups() if g), "") if match else ""
        if level:
            levels[level.upper()] += 1
        body = re.sub(r"run-\d+", "run-N", line[match.end() :] if match and not match.group(3) else line)
        body = re.sub(r"\b\d+(\.\d+)?\b", "N", body).strip()[:200]
        messages[body] += 1
        if level.upper() in {"WARNING", "ERROR", "CRITICAL"} or (not level and TROUBLE.search(line)):
            trouble[f"{level.upper() or 'no level'}: {body}"] += 1
    return {
        "lines": len(text.splitlines()),
        "levels": dict(levels),
        "tracebacks": text.count("Traceback"),
        "top": messages.most_common(5),
        "trouble": trouble.most_common(10),
    }


def per_run_table(
    columns: list[tuple[str, dict[Key, float], float]], runs: int, title: str, min_value: float = 0.05
) -> list[str]:
    """Requests by verb and resource (codes folded, non-2xx listed after), each column divided by `divisor`."""
    lines = [title]
    folded: list[dict[tuple[str, str], float]] = []
    for _, counts, _ in columns:
        f: dict[tuple[str, str], float] = {}
        for (verb, what, _code), v in counts.items():
            f[verb, what] = f.get((verb, what), 0.0) + v
        folded.append(f)
    keys = sorted({k for f in folded for k in f}, key=lambda k: -max(abs(f.get(k, 0.0)) for f in folded))
    header = f"  {'verb':<7} {'resource':<42}" + "".join(f" {name:>24}" for name, _, _ in columns)
    lines.append(header)
    for key in keys:
        values = [f.get(key, 0.0) / runs / divisor for f, (_, _, divisor) in zip(folded, columns, strict=True)]
        if max(abs(v) for v in values) < min_value:
            continue
        lines.append(f"  {key[0]:<7} {key[1]:<42}" + "".join(f" {v:24.2f}" for v in values))
    totals = [sum(f.values()) / runs / divisor for f, (_, _, divisor) in zip(folded, columns, strict=True)]
    lines.append(f"  {'all':<7} {'':<42}" + "".join(f" {v:24.2f}" for v in totals))
    return lines


def errors_of(counts: dict[Key, float]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (verb, what, code), v in counts.items():
        if code and not code.startswith(("2", "3")) and v >= 0.5:
            out[f"{verb} {what} {code}"] += round(v)
    return dict(out)


def run(args: argparse.Namespace) -> int:
    testbed = load_testbed()
    try:
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"):
            testbed.binary(name)
        testbed.binary("kuberay-crds")
    except testbed.TestbedError as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.out)
    work = out / "operator-scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    Path(STORE.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    n = args.runs
    plane = testbed.ControlPlane(work / "k8s")
    operator: LocalOperator | PodOperator | None = None
    baseline: subprocess.Popen[str] | None = None
    result: dict[str, Any] = {"runs": n, "loadavg_before": os.getloadavg(), "inPod": args.in_pod}
    try:
        print(f"starting the test control plane in {work} ...", file=sys.stderr)
        plane.start()
        for crds in (testbed.BIN / "kuberay-crds", REPO / "crds"):
            plane.kubectl("apply", "--server-side", "-f", str(crds))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        for ns in (BASE_NS, OP_NS):
            plane.kubectl("create", "namespace", ns)
        plane.kubectl("get", "trainingruns,rayjobs", "--all-namespaces")  # kubectl's discovery cache, for both applies
        bench = Bench(plane, testbed, n, work)
        base_manifest, op_manifest = bench.manifest(BASE_NS), bench.manifest(OP_NS)
        if args.in_pod:  # the node and the pod run through the baseline too (idle: nothing in OP_NS yet)
            operator = PodOperator(plane, testbed, work, allow_file_uris=not args.refuse_file_uris)

        # The garbage collector picks new CRDs up within 30 s; until it watches them, every owner reference to a
        # TrainingRun costs it GETs, in either namespace. Then the control plane's own traffic (leases, node
        # heartbeats, controllers' resyncs), as a rate.
        # `--background 0` (the smoke test): neither, and the counts include the control plane's own traffic.
        background: dict[Key, float] = {}
        if args.background > 0:
            print("waiting for the garbage collector to watch TrainingRuns and RayJobs ...", file=sys.stderr)
            for plural in ("trainingruns", "rayjobs"):
                testbed.wait_until(
                    f"the garbage collector's watch on {plural}",
                    lambda p=plural: watching(bench.scraper, p, "cluster"),
                    90,
                )
            time.sleep(3)
            print(f"measuring the control plane's background for {args.background:.0f} s ...", file=sys.stderr)
            before = bench.scraper.requests()
            time.sleep(args.background)
            background = {k: v / args.background for k, v in delta(bench.scraper.requests(), before).items()}

        # Baseline: the apply, then one plain client creating the children.
        baseline = subprocess.Popen(
            [sys.executable, __file__, "--baseline-client", str(plane.kubeconfig), BASE_NS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert baseline.stdin is not None and baseline.stdout is not None
        if baseline.stdout.readline().strip() != "ready":
            raise SystemExit("the baseline client did not start")
        print(f"baseline: applying {n} TrainingRuns, then one client creates their RayJobs ...")
        m0, c0 = bench.scraper.requests(), serving_cpu(plane, operator)
        start = time.monotonic()
        bench.finish_apply(bench.start_apply(base_manifest), base_manifest)
        apply_base = time.monotonic() - start
        m_apply = bench.scraper.requests()
        go = time.monotonic() - start
        baseline.stdin.write("go\n")
        baseline.stdin.flush()
        client_report = json.loads(baseline.stdout.readline())
        base_time, _, base_count = bench.wait_for_rayjobs(BASE_NS, start, args.timeout, "baseline")
        base_marks = {k: go + v for k, v in client_report["milestones"].items()}
        m1, c1 = bench.scraper.requests(), serving_cpu(plane, operator)
        baseline.wait(timeout=30)
        apply_requests = delta(m_apply, m0)
        base_window = time.monotonic() - start
        base_counts = attributed(delta(m1, m0), base_window, background, apply_requests + bench.my_requests())
        # What the baseline's runs cost the API server afterwards, with no controller (expected: nothing).
        quiet = max(args.background, 1.0)
        print(f"baseline: {quiet:.0f} s of quiet with its {n} runs in place ...", file=sys.stderr)
        time.sleep(quiet)
        base_quiet = time.monotonic() - start - base_window
        base_steady = attributed(delta(bench.scraper.requests(), m1), base_quiet, background)

        # Slipway: the operator, watching before the apply.
        if operator is None:
            operator = LocalOperator(plane, work, allow_file_uris=not args.refuse_file_uris)
        running = operator
        testbed.wait_until(
            "the operator's watch on TrainingRuns", lambda: watching(bench.scraper, "trainingruns", "namespace"), 120
        )
        time.sleep(2)
        pid = operator.pid
        cpu0 = cpu_seconds(pid)
        rss_before = proc_status_kib(pid, "VmRSS")
        print(f"slipway operator, {operator.where} (pid {pid}, {rss_before / 1024:.0f} MiB): applying {n} "
              "TrainingRuns ...")  # fmt: skip
        bench.my_requests()
        m2, c2 = bench.scraper.requests(), serving_cpu(plane, operator)
        start = time.monotonic()
        applying = bench.start_apply(op_manifest)

        def watch() -> str:
            if running.poll() is not None:
                return f"operator EXITED ({running.poll()})"
            return f"operator RSS {proc_status_kib(pid, 'VmRSS') / 1024:.0f} MiB"

        def refused() -> str | None:
            if running.poll() is not None:
                return f"the operator's process ended (exit code {running.poll()}; its log: {running.log_path})"
            return bench.refused(OP_NS)

        op_time, op_marks, op_count = bench.wait_for_rayjobs(
            OP_NS, start, args.timeout, "operator", watch, applying, refused
        )
        bench.finish_apply(applying, op_manifest)
        apply_op = op_marks.get("applied", time.monotonic() - start)
        op_window = time.monotonic() - start
        m3, c3 = bench.scraper.requests(), serving_cpu(plane, operator)
        cpu1 = cpu_seconds(pid) if operator.poll() is None else float("nan")
        hwm_at_all = proc_status_kib(pid, "VmHWM") if operator.poll() is None else 0
        op_counts = attributed(delta(m3, m2), op_window, background, apply_requests + bench.my_requests())

        # Steady state: the resync keeps reconciling every run.
        steady_counts: dict[Key, float] = {}
        steady = 0.0
        if op_time is not None and args.steady > 0 and operator.poll() is None:
            s0 = time.monotonic()
            while (steady := time.monotonic() - s0) < args.steady and operator.poll() is None:
                print(f"\r  steady state: {steady:4.0f}/{args.steady:.0f} s, {watch()}   ", end="", file=sys.stderr)
                time.sleep(1)
            print(file=sys.stderr)
            m4 = bench.scraper.requests()
            steady = time.monotonic() - s0
            steady_counts = attributed(delta(m4, m3), steady, background)
        cpu2 = cpu_seconds(pid) if operator.poll() is None else float("nan")
        c4 = serving_cpu(plane, operator)
        hwm = proc_status_kib(pid, "VmHWM") if operator.poll() is None else hwm_at_all
        container_peak = operator.memory_peak_kib()
        phases: Counter[str] = Counter(
            str((r.get("status") or {}).get("phase", "(no status)"))
            for r in as_dict(
                bench.custom.list_namespaced_custom_object("slipway.dev", "v1alpha1", OP_NS, "trainingruns")
            )["items"]
        )
        exited = operator.poll()
        code = operator.stop()
        logs = log_summary(operator.log())
        result |= {
            "applySeconds": {"baseline": apply_base, "operator": apply_op},
            "baseline": {
                "seconds": base_time,
                "milestones": base_marks,
                "count": base_count,
                "client": client_report,
                "serving_cpu_seconds": spent(c1, c0),
                "requests": {" ".join(k): v for k, v in base_counts.items()},
                "quiet_seconds": base_quiet,
                "quiet_requests": {" ".join(k): v for k, v in base_steady.items()},
            },
            "operator": {
                "seconds": op_time,
                "milestones": op_marks,
                "count": op_count,
                "vmhwm_kib": hwm,
                "vmhwm_kib_at_all_rayjobs": hwm_at_all,
                "container_memory_peak_kib": container_peak,
                "where": operator.where,
                "cpu_seconds_to_all": cpu1 - cpu0,
                "cpu_seconds_steady": cpu2 - cpu1,
                "serving_cpu_seconds": spent(c3, c2),
                "serving_cpu_seconds_steady": spent(c4, c3),
                "steady_seconds": steady,
                "requests": {" ".join(k): v for k, v in op_counts.items()},
                "steady_requests": {" ".join(k): v for k, v in steady_counts.items()},
                "phases": dict(phases),
                "exited_early": exited,
                "exit_code": code,
                "log": logs,
            },
            "loadavg_after": os.getloadavg(),
            "background_per_second": {" ".join(k): v for k, v in background.items()},
        }
        (out / "operator_scale.json").write_text(json.dumps(result, indent=2))
        report(result, base_counts, op_counts, base_steady, steady_counts, operator.log_path)
        return 0 if op_time is not None else 1
    finally:
        if operator is not None:
            operator.stop()
            operator.close()
        if baseline is not None and baseline.poll() is None:
            baseline.kill()
            baseline.wait()
        plane.stop()


def report(
    result: dict[str, Any],
    base_counts: dict[Key, float],
    op_counts: dict[Key, float],
    base_steady: dict[Key, float],
    steady_counts: dict[Key, float],
    op_log: Path,
) -> None:
    n = result["runs"]
    base, op = result["baseline"], result["operator"]
    apply = result["applySeconds"]
    print()
    print(
        f"{n} TrainingRuns applied at once (`kubectl apply --server-side` of one List: {apply['baseline']:.1f} s "
        f"baseline, {apply['operator']:.1f} s operator), on the loopback test control plane; load average "
        f"{result['loadavg_before'][0]:.2f} before, {result['loadavg_after'][0]:.2f} after, on {os.cpu_count()} CPUs; "
        f"the operator: {op['where']}"
    )
    if op["seconds"] is None:
        print(
            f"FAILED: the operator made only {op['count']}/{n} RayJobs within the timeout; the figures below are "
            "up to the timeout"
        )
    base_req = sum(base_counts.values()) / n
    op_req = sum(op_counts.values()) / n
    rows: list[tuple[str, float | None, float | None, str]] = [
        (f"seconds until all {n} RayJobs exist", base["seconds"], op["seconds"], "{:.1f}"),
        ("  ... until the first RayJob", base["milestones"].get("first"), op["milestones"].get("first"), "{:.1f}"),
        ("  ... until half of them", base["milestones"].get("half"), op["milestones"].get("half"), "{:.1f}"),
        ("peak RSS MiB (VmHWM)", base["client"]["vmhwm_kib"] / 1024, op["vmhwm_kib"] / 1024, "{:.0f}"),
        *(
            [("  operator container memory.peak MiB", None, op["container_memory_peak_kib"] / 1024, "{:.0f}")]
            if op.get("container_memory_peak_kib")
            else []
        ),
        ("CPU seconds until all RayJobs", base["client"]["cpu_seconds"], op["cpu_seconds_to_all"], "{:.1f}"),
        ("API requests per TrainingRun", base_req, op_req, "{:.2f}"),
        *(
            (f"{name} CPU s", base["serving_cpu_seconds"].get(key), op["serving_cpu_seconds"].get(key), "{:.1f}")
            for key, name in SERVING
            if key in op["serving_cpu_seconds"]
        ),
    ]
    print(f"{'':<38} {'baseline (one client)':>22} {'slipway operator':>18} {'ratio op/baseline':>18}")
    for label, b, o, fmt in rows:
        bs = fmt.format(b) if b is not None else "-"
        os_ = fmt.format(o) if o is not None else "-"
        ratio = f"{o / b:.2f}x" if (b and o is not None) else "-"
        print(f"{label:<38} {bs:>22} {os_:>18} {ratio:>18}")
    if steady_counts:
        minutes = op["steady_seconds"] / 60
        per_min = sum(steady_counts.values()) / n / minutes
        cpu = op["cpu_seconds_steady"] / op["steady_seconds"] * 100
        base_min = sum(base_steady.values()) / n / (base["quiet_seconds"] / 60)
        print(
            f"steady state after all RayJobs exist ({op['steady_seconds']:.0f} s): {per_min:.1f} API requests per "
            f"TrainingRun per minute, {per_min * n / 60:.0f} requests/s in all; operator CPU {cpu:.0f}% of one core "
            f"(the baseline's runs with no controller: {base_min:.2f} per TrainingRun per minute)"
        )
        serving = ", ".join(
            f"{name} {op['serving_cpu_seconds_steady'][key] / op['steady_seconds'] * 100:.0f}% of a core"
            for key, name in SERVING
            if key in op["serving_cpu_seconds_steady"]
        )
        print(f"  meanwhile: {serving}")
    print()
    columns = [
        ("baseline /run", base_counts, 1.0),
        ("operator /run", op_counts, 1.0),
    ]
    if steady_counts:
        columns.append(("baseline /run/min after", base_steady, base["quiet_seconds"] / 60))
        columns.append(("operator /run/min after", steady_counts, op["steady_seconds"] / 60))
    title = (
        "API requests by verb and resource (less the apply, this script's polls and the background; after: per "
        "minute once all RayJobs exist)"
    )
    for line in per_run_table(columns, n, title):
        print(line)
    windows = [("baseline", base_counts), ("operator", op_counts), ("baseline after", base_steady)]
    for name, counts in [*windows, ("operator after", steady_counts)]:
        errors = errors_of(counts)
        if errors:
            print(f"non-2xx answers ({name}): " + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())))
    print()
    print(f"TrainingRun phases at the end: {op['phases']}")
    logs = op["log"]
    early = op["exited_early"]
    print(
        f"operator log ({op_log}): {logs['lines']} lines, by level {logs['levels']}, {logs['tracebacks']} tracebacks; "
        f"exit code {op['exit_code']}" + (f" (it had exited by itself with {early})" if early is not None else "")
    )
    if logs["top"]:
        print("  most frequent:")
        for message, count in logs["top"]:
            print(f"  {count:8d}x {message}")
    if logs["trouble"]:
        print("  warnings, errors and troubling lines:")
        for message, count in logs["trouble"]:
            print(f"  {count:8d}x {message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="TrainingRuns to apply at once (default 300)")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state measured after (60)")
    parser.add_argument("--background", type=float, default=15.0, help="seconds of quiet measured first (15; 0: none)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all RayJobs (900)")
    parser.add_argument("--in-pod", action="store_true", help="the operator as the chart's pod on the real node")
    parser.add_argument("--out", default=str(OUT), help="where the figures and logs go (benchmarks/.out)")
    refuse = "the operator without --allow-file-uris: every run is Invalid, and the benchmark stops, saying so"
    parser.add_argument("--refuse-file-uris", action="store_true", help=refuse)
    parser.add_argument("--baseline-client", nargs=2, metavar=("KUBECONFIG", "NS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_client:
        return baseline_client(*args.baseline_client)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
