"""What the operator reads from the inference servers' /metrics: traffic, errors, latency, drift, live quality.

Pure: Prometheus text in, a `Traffic` summary out. Replicas are added up (counters and histogram buckets sum),
so a revision's p99 is computed over all of its pods' requests, as a Prometheus `histogram_quantile` would.
Live quality is each replica's feedback window, weighted by its rows: exact for accuracy and MAE, RMSE through
the mean of squares; macro F1 is the rows-weighted mean of the replicas' (close, not exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from slipway_trainer.artifacts import DRIFT_METRIC as DRIFT
from slipway_trainer.artifacts import GROUP_QUALITY_METRIC as GROUP_QUALITY
from slipway_trainer.artifacts import GROUP_ROWS_METRIC as GROUP_ROWS
from slipway_trainer.artifacts import LATENCY_METRIC as LATENCY
from slipway_trainer.artifacts import QUALITY_METRIC as QUALITY
from slipway_trainer.artifacts import QUALITY_ROWS_METRIC as QUALITY_ROWS
from slipway_trainer.artifacts import REQUESTS_METRIC as REQUESTS
from slipway_trainer.artifacts import (
    SHADOW_AGREED_METRIC,
    SHADOW_DIFFERENCE_METRIC,
    SHADOW_REQUESTS_METRIC,
    SHADOW_ROWS_METRIC,
)

SHADOW = {  # sample name -> key of Traffic.shadow (the outcome label adds answered, failed, dropped)
    f"{SHADOW_ROWS_METRIC}_total": "rows",
    f"{SHADOW_AGREED_METRIC}_total": "agreed",
    f"{SHADOW_DIFFERENCE_METRIC}_total": "difference",
}


@dataclass
class Traffic:
    """Inference traffic of one revision (all its replicas), since they started."""

    requests: int = 0
    errors: int = 0  # answered 5xx
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (s) -> cumulative count
    drift: dict[str, float] = field(default_factory=dict)  # feature -> largest score over replicas
    replicas: int = 0  # how many replicas answered
    quality: dict[str, float] = field(default_factory=dict)  # metric -> live value over the feedback windows
    quality_rows: int = 0  # feedback rows those values are measured on
    groups: dict[str, Traffic] = field(default_factory=dict)  # group feedback named -> its quality and rows
    shadow: dict[str, float] = field(default_factory=dict)  # copies sent to a shadow and their comparison (SHADOW)
    shadow_task: str = ""  # classification or regression: how those answers were compared

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float = 0.99) -> float | None:
        """The q-quantile of request latency in milliseconds (the upper bound of the bucket that holds it),
        None without requests; +Inf (math.inf) when it lies beyond the largest bucket."""
        total = self.buckets.get(math.inf, 0.0)
        if total <= 0:
            return None
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= q * total:
                return bound * 1000.0
        return math.inf

    def counters(self) -> dict[str, Any]:
        """Requests, errors and latency buckets as the status keeps them (a canary step's starting point)."""
        buckets = {("+Inf" if math.isinf(b) else f"{b:g}"): c for b, c in sorted(self.buckets.items())}
        kept: dict[str, Any] = {"requests": self.requests, "errors": self.errors, "buckets": buckets}
        return kept | ({"shadow": dict(self.shadow)} if self.shadow else {})

    @classmethod
    def of_counters(cls, kept: dict[str, Any] | None) -> Traffic:
        kept = kept or {}
        buckets = {float(b): float(c) for b, c in (kept.get("buckets") or {}).items()}
        shadow = {k: float(v) for k, v in (kept.get("shadow") or {}).items()}
        return cls(int(kept.get("requests") or 0), int(kept.get("errors") or 0), buckets, shadow=shadow)

    def since(self, before: Traffic) -> Traffic:
        """The traffic after `before` (the counters when a canary step started). A count that went down (a replica
        restarted with fresh counters) restarts the window from zero, as Prometheus' rate() treats a reset."""
        deltas: list[float] = [self.requests - before.requests, self.errors - before.errors]
        deltas += [c - before.buckets.get(b, 0.0) for b, c in self.buckets.items()]
        deltas += [c - before.shadow.get(k, 0.0) for k, c in self.shadow.items()]
        if any(d < 0 for d in deltas):
            return Traffic(self.requests, self.errors, dict(self.buckets), dict(self.drift), self.replicas,
                           shadow=dict(self.shadow), shadow_task=self.shadow_task)  # fmt: skip
        buckets = {b: c - before.buckets.get(b, 0.0) for b, c in self.buckets.items()}
        shadow = {k: c - before.shadow.get(k, 0.0) for k, c in self.shadow.items()}
        return Traffic(
            self.requests - before.requests,
            self.errors - before.errors,
            buckets,
            dict(self.drift),
            self.replicas,
            shadow=shadow,
            shadow_task=self.shadow_task,
        )

    def add(self, other: Traffic) -> Traffic:
        buckets = dict(self.buckets)
        for bound, count in other.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
        drift = dict(self.drift)
        for feature, score in other.drift.items():
            drift[feature] = max(drift.get(feature, 0.0), score)
        return Traffic(
            self.requests + other.requests,
            self.errors + other.errors,
            buckets,
            drift,
            self.replicas + other.replicas,
            _weighted(self, other),
            self.quality_rows + other.quality_rows,
            {g: _group(self.groups.get(g), other.groups.get(g)) for g in set(self.groups) | set(other.groups)},
            {k: self.shadow.get(k, 0.0) + other.shadow.get(k, 0.0) for k in set(self.shadow) | set(other.shadow)},
            self.shadow_task or other.shadow_task,
        )


def _group(a: Traffic | None, b: Traffic | None) -> Traffic:
    """One group's live quality over two sets of replicas."""
    a, b = a or Traffic(), b or Traffic()
    return Traffic(quality=_weighted(a, b), quality_rows=a.quality_rows + b.quality_rows)


def _weighted(a: Traffic, b: Traffic) -> dict[str, float]:
    rows = a.quality_rows + b.quality_rows
    if rows == 0:
        return {}
    out = {}
    for metric in set(a.quality) | set(b.quality):
        parts = [(t.quality[metric], t.quality_rows) for t in (a, b) if metric in t.quality and t.quality_rows]
        weight = sum(n for _, n in parts) or 1
        if metric == "rmse":
            out[metric] = math.sqrt(sum(v * v * n for v, n in parts) / weight)
        else:
            out[metric] = sum(v * n for v, n in parts) / weight
    return out


def parse(text: str, model: str) -> Traffic:
    """One server's /metrics, for the model served under `model` (the ModelDeployment's name)."""
    traffic = Traffic(replicas=1)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == f"{REQUESTS}_total":
                count = int(sample.value)
                traffic.requests += count
                if sample.labels.get("code", "").startswith("5"):
                    traffic.errors += count
            elif sample.name == f"{LATENCY}_bucket":
                bound = float(sample.labels["le"])
                traffic.buckets[bound] = traffic.buckets.get(bound, 0.0) + sample.value
            elif sample.name == QUALITY:
                traffic.quality[sample.labels.get("metric", "")] = float(sample.value)
            elif sample.name == QUALITY_ROWS:
                traffic.quality_rows = int(sample.value)
            elif sample.name == GROUP_QUALITY:
                group = traffic.groups.setdefault(sample.labels.get("group", ""), Traffic())
                group.quality[sample.labels.get("metric", "")] = float(sample.value)
            elif sample.name == GROUP_ROWS:
                traffic.groups.setdefault(sample.labels.get("group", ""), Traffic()).quality_rows = int(sample.value)
            elif sample.name == f"{SHADOW_REQUESTS_METRIC}_total":
                outcome = sample.labels.get("outcome", "")
                traffic.shadow[outcome] = traffic.shadow.get(outcome, 0.0) + sample.value
            elif sample.name in SHADOW:
                traffic.shadow[SHADOW[sample.name]] = float(sample.value)
                traffic.shadow_task = sample.labels.get("task") or traffic.shadow_task
            elif sample.name == DRIFT:
                feature = sample.labels.get("feature", "")
                traffic.drift[feature] = max(traffic.drift.get(feature, 0.0), float(sample.value))
    return traffic


def total(samples: list[Traffic]) -> Traffic | None:
    """All replicas of a revision together; None when none answered."""
    if not samples:
        return None
    out = Traffic()
    for sample in samples:
        out = out.add(sample)
    return out
