"""The data profile: per-feature statistics of the train split's raw (cleaned, untransformed) values.

Serving compares live inputs with it to measure drift, so it describes what clients send: raw values.
Quantiles and histograms come from a seeded sample of at most 100,000 values per column (exact below).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slipway_trainer.data.stats import QUANTILES, CategoricalStats, ImageStats, NumericStats

HISTOGRAM_BINS = 20
TOP_CATEGORIES = 50


def numeric_profile(stats: NumericStats) -> dict[str, Any]:
    sample = stats.sample
    if sample.size:
        low, high = float(sample.min()), float(sample.max())
        if low == high:
            high = low + 1.0
        counts, edges = np.histogram(sample, bins=HISTOGRAM_BINS, range=(low, high))
        scale = stats.count / sample.size
        histogram = {"edges": [round(float(e), 6) for e in edges], "counts": [round(float(c * scale)) for c in counts]}
    else:
        histogram = {"edges": [], "counts": []}
    return {
        "type": "numeric",
        "count": stats.count,
        "missing": stats.missing,
        "mean": _round(stats.mean),
        "std": _round(stats.std),
        "min": _round(stats.minimum if stats.count else 0.0),
        "max": _round(stats.maximum if stats.count else 0.0),
        "quantiles": {
            f"p{round(q * 100):02d}": _round(v) for q, v in zip(QUANTILES, stats.quantiles(QUANTILES), strict=True)
        },
        "histogram": histogram,
    }


def categorical_profile(stats: CategoricalStats) -> dict[str, Any]:
    top = stats.categories(TOP_CATEGORIES)
    total = max(stats.count, 1)
    return {
        "type": "categorical",
        "count": stats.count,
        "missing": stats.missing,
        "distinct": len(stats.counts) + (1 if stats.overflow else 0),
        "frequencies": {value: round(stats.counts[value] / total, 6) for value in top},
        "otherFrequency": round(1 - sum(stats.counts[v] for v in top) / total, 6) if stats.count else 0.0,
    }


def image_profile(stats: ImageStats, shape: tuple[int, int, int]) -> dict[str, Any]:
    total = max(int(stats.histogram.sum()), 1)
    return {
        "type": "image",
        "count": stats.count // max(shape[0] * shape[1], 1),
        "height": shape[0],
        "width": shape[1],
        "channels": shape[2],
        "pixelMean": [_round(v) for v in stats.mean],
        "pixelStd": [_round(v) for v in stats.std],
        "pixelHistogram": {
            "edges": [i * 16 for i in range(17)],
            "frequencies": [round(int(c) / total, 6) for c in stats.histogram],
        },
    }


def _round(value: float) -> float:
    return round(float(value), 6)
