"""The drawings the report makes itself (matplotlib's Agg renderer through `Figure`, never pyplot): a dataset's
class balance or label histogram, an image column's pixel histogram, the numeric features' histograms.

Each function returns the `Figure`; `Output.draw` saves it as a PNG beside the page.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

BLUE = "#2f6fd6"
GREY = "#555b66"


def _bars(ax: Axes, edges: Sequence[float], heights: Sequence[float], color: str) -> None:
    """A histogram drawn from its edges (one more than the heights), each bar as wide as its bin."""
    ax.bar(edges[:-1], heights, width=[b - a for a, b in itertools.pairwise(edges)], align="edge", color=color)


def label_histogram(values: Sequence[float], weights: Sequence[float], label: str) -> Figure:
    """A regression label's distribution on the train split."""
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    ax.hist(values, bins=20, weights=weights, color=BLUE)
    ax.set_xlabel(label)
    ax.set_ylabel("rows (train)")
    ax.set_title(f"{label} on the train split")
    return fig


def class_balance(counts: dict[str, Sequence[int]], names: Sequence[str], title: str) -> Figure:
    """Grouped bars: for each split (`counts`' keys, in order) its rows per class, the classes named `names`."""
    splits = list(counts)
    fig = Figure(figsize=(max(6.4, 0.45 * len(names) * max(1, len(splits)) / 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        offset = (i - (len(splits) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(names))], counts[split], width=width, label=split)
    crowded = len(names) > 8
    ax.set_xticks(
        range(len(names)),
        list(names),
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
        fontsize=8,
    )
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def pixel_histogram(name: str, edges: Sequence[float], frequencies: Sequence[float]) -> Figure:
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.add_subplot()
    _bars(ax, edges, frequencies, GREY)
    ax.set_xlabel("pixel value (0..255)")
    ax.set_ylabel("share of pixels")
    ax.set_title(f"Pixel histogram of {name} (train)")
    return fig


def numeric_histograms(features: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> Figure:
    """Small histograms, four a line, of (name, edges, counts); one whose edges do not fit its counts is blank."""
    columns = min(4, len(features))
    lines = math.ceil(len(features) / columns)
    fig = Figure(figsize=(3.0 * columns, 2.2 * lines))
    for i, (name, edges, counts) in enumerate(features):
        ax = fig.add_subplot(lines, columns, i + 1)
        if len(edges) == len(counts) + 1 and counts:
            _bars(ax, edges, counts, BLUE)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    return fig
