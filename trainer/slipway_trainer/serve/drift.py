"""Data drift: a rolling window of live raw inputs compared with the train split's profile from the dataset
manifest. PSI per feature (numeric: the profile's histogram bins; text: its frequencies; images: the pixel
histogram) or, for numeric features, the Kolmogorov-Smirnov statistic (SciPy's `kstest`) of the live values against
the distribution the profile's minimum, quantiles and maximum describe."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from slipway_trainer.data.stats import image_pixels, numeric_values

EPSILON = 1e-4
MIN_ROWS = 30  # no score before the window has this many rows
log = logging.getLogger("slipway.drift")


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected / max(expected.sum(), EPSILON), EPSILON, None)
    a = np.clip(actual / max(actual.sum(), EPSILON), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_cdf(spec: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The training distribution of a numeric feature as a CDF: linear between the profile's minimum (0), its
    quantiles and its maximum (1); 0 below the minimum, 1 above the maximum."""
    quantiles = spec["quantiles"]
    points = [float(spec["min"]), *(float(quantiles[k]) for k in sorted(quantiles)), float(spec["max"])]
    levels = [0.0, *(int(k[1:]) / 100 for k in sorted(quantiles)), 1.0]
    xs, ys = np.maximum.accumulate(np.asarray(points)), np.asarray(levels)  # rounding can unsort equal quantiles

    def cdf(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(x, xs, ys, left=0.0, right=1.0))

    return cdf


@dataclass
class DriftMonitor:
    profile: dict[str, Any]
    method: str = "psi"
    threshold: float = 0.2
    window_size: int = 1000
    windows: dict[str, deque[Any]] = field(default_factory=dict)
    drifted: set[str] = field(default_factory=set)

    def observe(self, table: pa.Table) -> None:
        for name, spec in self.profile.items():
            if name not in table.column_names:
                continue
            window = self.windows.setdefault(name, deque(maxlen=self.window_size))
            column = table.column(name)
            if spec["type"] == "numeric":
                values = numeric_values(column)
                window.extend(values[~np.isnan(values)].tolist())
            elif spec["type"] == "categorical":
                window.extend(str(v) for v in column.to_pylist() if v is not None)
            elif spec["type"] == "image":
                size = spec["height"] * spec["width"] * spec["channels"]
                window.extend(np.bincount(row >> 4, minlength=16) for row in image_pixels(column, size))

    def scores(self) -> dict[str, float]:
        out = {}
        for name, window in self.windows.items():
            if len(window) < MIN_ROWS:
                continue
            spec = self.profile[name]
            if spec["type"] == "numeric":
                out[name] = self._numeric(spec, np.asarray(window, dtype=np.float64))
            elif spec["type"] == "categorical":
                out[name] = self._categorical(spec, list(window))
            elif spec["type"] == "image":
                expected = np.asarray(spec["pixelHistogram"]["frequencies"])
                out[name] = psi(expected, np.sum(np.asarray(window), axis=0).astype(np.float64))
        self._log_crossings(out)
        return out

    def _numeric(self, spec: dict[str, Any], values: np.ndarray) -> float:
        if self.method == "ks":
            from scipy.stats import kstest  # 0.3 s to import: only servers that ask for KS pay it

            return float(kstest(values, reference_cdf(spec)).statistic)
        edges = np.asarray(spec["histogram"]["edges"], dtype=np.float64)
        expected = np.asarray(spec["histogram"]["counts"], dtype=np.float64)
        if edges.size < 2:
            return 0.0
        clipped = np.clip(values, edges[0], edges[-1])  # beyond the range counts in the outer bins
        actual, _ = np.histogram(clipped, bins=edges)
        return psi(expected, actual.astype(np.float64))

    def _categorical(self, spec: dict[str, Any], values: list[str]) -> float:
        frequencies = dict(spec["frequencies"])
        categories = list(frequencies)
        expected = np.array([frequencies[c] for c in categories] + [spec.get("otherFrequency", 0.0)])
        counts = {c: 0 for c in categories}
        other = 0
        for v in values:
            if v in counts:
                counts[v] += 1
            else:
                other += 1
        actual = np.array([counts[c] for c in categories] + [other], dtype=np.float64)
        return psi(expected, actual)

    def _log_crossings(self, scores: dict[str, float]) -> None:
        now = {name for name, score in scores.items() if score > self.threshold}
        for name in sorted(now - self.drifted):
            log.warning(
                "drift detected: feature %s %s %.3f > threshold %.3f", name, self.method, scores[name], self.threshold
            )
        for name in sorted(self.drifted - now):
            log.info(
                "drift cleared: feature %s %s %.3f <= threshold %.3f",
                name,
                self.method,
                scores.get(name, 0.0),
                self.threshold,
            )
        self.drifted = now

    def report(self) -> dict[str, Any]:
        scores = self.scores()
        return {
            "method": self.method,
            "threshold": self.threshold,
            "windowSize": self.window_size,
            "rows": {name: len(w) for name, w in self.windows.items()},
            "scores": {k: round(v, 6) for k, v in scores.items()},
            "drifted": sorted(self.drifted),
            "maxScore": round(max(scores.values()), 6) if scores else None,
        }
