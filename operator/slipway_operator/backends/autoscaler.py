"""The local backend's HorizontalPodAutoscaler: the `autoscaling/v2` rule Kubernetes' controller applies, on this
machine's server processes.

Each pass of the ModelDeployment observes its stable Deployment; the local backend then measures the servers
(`cpu`: the CPU time of each server's process group, from /proc, as a percent of its CPU request; `concurrency`:
each server's `slipway_inference_in_flight` gauge from its /metrics), and `decide` returns the replicas: the HPA's
`ceil(replicas * average / target)` with its 10% tolerance, between minReplicas and maxReplicas, up at once, down
only to the highest recommendation of the scale-down stabilisation window. What it saw goes into the HPA's status
in Kubernetes' own shape, so the operator reads it the same way on both backends.
"""

from __future__ import annotations

import datetime
import math
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway_operator.api.common import quantity
from slipway_trainer.artifacts import IN_FLIGHT_METRIC

TOLERANCE = 0.1  # the HPA controller's: a ratio within 10% of the target changes nothing
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(group: int) -> float:
    """CPU time (user + system) of the live processes of a process group, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:  # pgrp; then utime, stime are the 12th and 13th after the state
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def in_flight(port: int) -> float | None:
    """A server's in-flight gauge, from its /metrics (None when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(IN_FLIGHT_METRIC + "{")]
    return sum(values) if values else None


def cores(request: Any) -> float:
    """A CPU request (`250m`, `2`) in cores; one when the pod asks for none."""
    return quantity(request) or 1.0


@dataclass
class Measure:
    """Per-server samples between passes: CPU time and when it was read, by process group."""

    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)

    def average(self, metric: str, servers: list[tuple[int, int]], request_cores: float) -> float | None:
        """The metric averaged over the ready servers, each `(process group, port)`; None until there is a value
        (CPU needs two samples)."""
        values = []
        for group, port in servers:
            if metric == "cpu":
                now, used = time.monotonic(), cpu_seconds(group)
                before = self.cpu.get(group)
                self.cpu[group] = (used, now)
                if before is not None and now > before[1]:
                    values.append(100 * (used - before[0]) / (now - before[1]) / request_cores)
            else:
                value = in_flight(port)
                if value is not None:
                    values.append(value)
        return sum(values) / len(values) if values else None


def decide(
    hpa: dict[str, Any], replicas: int, average: float | None, history: list[list[float]], now: float
) -> tuple[int, list[list[float]], dict[str, Any]]:
    """(replicas, the recommendations of the stabilisation window, the HPA's status) for one pass."""
    spec = hpa["spec"]
    low, high = int(spec["minReplicas"]), int(spec["maxReplicas"])
    metric = spec["metrics"][0]
    target = metric.get("resource", metric.get("pods", {}))["target"]
    goal = float(target.get("averageUtilization") or target.get("averageValue") or 1)
    window = float(((spec.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds", 300))
    if average is None:
        status = _status(replicas, replicas, None, metric, "no metrics from the servers yet")
        return min(max(replicas, low), high), history, status
    ratio = average / goal
    wanted = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(replicas * ratio)
    wanted = min(max(wanted, low), high)
    history = [h for h in history if now - h[0] < window] + [[now, wanted]]
    ceiling = int(max(n for _, n in history))  # down only as far as every recommendation of the window agrees
    chosen = wanted if wanted > replicas else min(replicas, ceiling)
    return chosen, history, _status(replicas, chosen, average, metric, None)


def _status(
    current: int, desired: int, average: float | None, metric: dict[str, Any], problem: str | None
) -> dict[str, Any]:
    kind = "resource" if metric["type"] == "Resource" else "pods"
    measured: dict[str, Any] = {}
    if average is not None:
        value = {"averageUtilization": round(average)} if kind == "resource" else {"averageValue": f"{average:.3g}"}
        measured = {"type": metric["type"], kind: {**{k: v for k, v in metric[kind].items() if k != "target"},
                                                   "current": value}}  # fmt: skip
    condition = {
        "type": "ScalingActive",
        "status": "False" if problem else "True",
        "reason": "FailedGetMetrics" if problem else "ValidMetricFound",
        "message": problem or "the autoscaler read the servers' metric",
        "lastTransitionTime": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return {
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": [measured] if measured else [],
        "conditions": [condition],
    }
