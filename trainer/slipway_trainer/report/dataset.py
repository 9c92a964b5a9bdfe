"""A prepared dataset's section, from its manifest (`Manifest`, read through its contract): source, rows,
dropped rows, privacy, the label's distribution (class balance or a histogram) and the data profile.

The section's status gives where the manifest is (`manifestUri`, else `<outputUri>/manifest.json`), and the
figures to fall back on while there is none (`rows`, `droppedRows`, `fingerprint`).
"""

from __future__ import annotations

from typing import Any

from slipway_trainer import storage
from slipway_trainer.artifacts import MANIFEST, RESULT, Manifest, Result
from slipway_trainer.report import plots
from slipway_trainer.report.files import Output, read_artifact
from slipway_trainer.report.html import Markup, as_dict, code, esc, facts, figure, figures, fmt, note, table
from slipway_trainer.report.page import Section

MAX_FEATURES = 200  # rows of the feature table
MAX_HISTOGRAMS = 12  # numeric features drawn as small histograms
MAX_CLASSES_PLOTTED = 40
SPLITS = ("train", "validation", "test")


def render(s: Section, spec: dict[str, Any], out: Output) -> None:
    status = s.status
    output = status.get("outputUri")
    manifest_uri = status.get("manifestUri") or (storage.join(output, MANIFEST) if output else None)
    manifest, problem = read_artifact(Manifest.read, manifest_uri)
    rows = (manifest.rows if manifest else {}) or as_dict(status.get("rows"))
    if rows:
        s.summary = ", ".join(f"{k} {fmt(rows[k])}" for k in SPLITS if k in rows)
    if s.failed and status.get("artifactUri"):
        result, _ = read_artifact(Result.read, storage.join(status["artifactUri"], RESULT))
        if result and result.reason:
            s.summary = f"failed: {result.reason}"

    def overview() -> list[Markup]:
        source = (manifest.source.uri if manifest else None) or as_dict(spec.get("source")).get("uri")
        label = (manifest.label if manifest else None) or spec.get("label")
        fingerprint = (manifest.fingerprint if manifest else None) or status.get("fingerprint")
        return [
            facts(
                [
                    ("source", code(source) if source else None),
                    ("task", manifest and manifest.task),
                    ("label", label),
                    ("classes", len(manifest.classes) if manifest and manifest.classes else None),
                    ("version", manifest and manifest.version),
                    ("fingerprint", code(fingerprint) if fingerprint else None),
                    ("output", code(output) if output else None),
                    ("created", manifest and manifest.created_at),
                ]
            ),
            Markup("")
            if manifest
            else s.absent(f"the dataset manifest ({manifest_uri or 'status.manifestUri is not set'})", problem),
        ]

    s.add("Dataset", overview)

    def counts() -> list[Markup]:
        if not rows:
            return []
        order = ["read", "cleaned", *SPLITS, "total"]
        keys = [k for k in order if k in rows] + [k for k in rows if k not in order]
        return [table(keys, [[rows[k] for k in keys]])]

    s.add("Rows", counts)

    def dropped() -> list[Markup]:
        found = manifest.dropped if manifest else status.get("droppedRows")
        if found is None:
            return []
        drops = as_dict(found)
        if not drops:
            return [note("No row was dropped while cleaning.", "message")]
        ordered = sorted(drops.items(), key=lambda kv: -int(kv[1]) if isinstance(kv[1], int) else 0)
        return [table(["reason", "rows"], [*ordered, ("total", sum(v for v in drops.values() if isinstance(v, int)))])]

    s.add("Dropped rows, by reason", dropped)
    if manifest is None:
        return
    privacy = manifest.privacy
    if privacy.dropped_columns or privacy.hashed_columns:
        s.add(
            "Privacy",
            lambda: [
                facts(
                    [
                        ("dropped columns", ", ".join(privacy.dropped_columns)),
                        ("hashed columns", ", ".join(privacy.hashed_columns)),
                        ("hash", privacy.hash),
                    ]
                )
            ],
        )
    s.add("Label distribution", lambda: label_distribution(manifest, out))
    s.add("Features (train split, raw values)", lambda: features(manifest, out))


def label_distribution(manifest: Manifest, out: Output) -> list[Markup]:
    balance = manifest.class_balance
    if not balance:
        return []
    splits = [s for s in SPLITS if s in balance] + [s for s in balance if s not in SPLITS]
    label = manifest.label or "label"
    if manifest.task == "regression":
        values: list[float] = []
        weights: list[float] = []
        for value, count in (balance.get("train") or balance[splits[0]]).items():
            try:
                values.append(float(value))
                weights.append(float(count))
            except (TypeError, ValueError):
                continue
        if not values:
            return []
        fig = plots.label_histogram(values, weights, label)
        return [figures([figure(out.draw(fig, "label-histogram"), f"Histogram of {label} (train split)")])]
    names = _class_names(manifest)
    classes = sorted(dict.fromkeys(c for s in splits for c in balance[s]), key=_class_order)
    largest = set(sorted(classes, key=lambda c: -int(balance[splits[0]].get(c, 0)))[:MAX_CLASSES_PLOTTED])
    shown = [c for c in classes if c in largest]
    title = f"Class balance of {label}" + (f" (the {len(shown)} largest classes)" if len(shown) < len(classes) else "")
    fig = plots.class_balance(
        {split: [int(balance[split].get(c, 0)) for c in shown] for split in splits},
        [names.get(c, c) for c in shown],
        title,
    )
    named = ["name"] if names else []
    rows = [[c, *([names.get(c, "")] if names else []), *(balance[s].get(c, 0) for s in splits)] for c in classes]
    return [
        figures([figure(out.draw(fig, "class-balance"), f"Rows per class of {label}, per split")]),
        table(["class", *named, *splits], rows),
    ]


def _class_names(manifest: Manifest) -> dict[str, str]:
    """Each class's display name, where the source names its classes otherwise than their values."""
    classes = [str(c) for c in manifest.classes]
    names = manifest.class_names
    return {c: names[i] for i, c in enumerate(classes) if i < len(names) and names[i] != c}


def _class_order(value: str) -> tuple[int, float, str]:
    """Classes in numeric order when they are numbers, then by name."""
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def _summary(f: dict[str, Any]) -> Any:
    """One feature's statistics in a line, by its type."""
    kind = f.get("type")
    if kind == "numeric":
        median = as_dict(f.get("quantiles")).get("p50")
        return Markup(
            f"mean {esc(f.get('mean'))}, std {esc(f.get('std'))}, min {esc(f.get('min'))}, "
            f"median {esc(median)}, max {esc(f.get('max'))}"
        )
    if kind == "categorical":
        top = sorted(as_dict(f.get("frequencies")).items(), key=lambda kv: -float(kv[1]))[:5]
        shares = ", ".join(f"{value} ({float(share):.1%})" for value, share in top)
        return f"{fmt(f.get('distinct'))} distinct; top: {shares}"
    if kind == "image":
        return (
            f"{f.get('height')} x {f.get('width')} x {f.get('channels')} pixels; "
            f"pixel mean {fmt(f.get('pixelMean'))}, std {fmt(f.get('pixelStd'))} (0..1)"
        )
    return fmt({k: v for k, v in f.items() if k not in ("type", "count", "missing")})


def features(manifest: Manifest, out: Output) -> list[Markup]:
    found = {name: as_dict(f) for name, f in manifest.profile.features.items()}
    if not found:
        return [note("The manifest has no data profile.")]
    rows = [
        [name, f.get("type"), f.get("count"), f.get("missing"), _summary(f)]
        for name, f in list(found.items())[:MAX_FEATURES]
    ]
    parts = [table(["feature", "type", "values", "missing", "mean / top values"], rows)]
    if len(found) > MAX_FEATURES:
        parts.append(note(f"… and {len(found) - MAX_FEATURES} more features (see the manifest).", "muted"))
    drawn: list[Markup] = []
    for name, f in found.items():
        if f.get("type") == "image":
            parts.append(_pixel_stats(name, f))
            drawn.append(_pixel_histogram(name, f, out))
    numeric = [
        (n, as_dict(f.get("histogram")))
        for n, f in found.items()
        if f.get("type") == "numeric" and f.get("min") != f.get("max")
    ]
    if numeric:
        shown = numeric[:MAX_HISTOGRAMS]
        fig = plots.numeric_histograms([(n, h.get("edges") or [], h.get("counts") or []) for n, h in shown])
        which = f"the first {len(shown)} of {len(numeric)}" if len(numeric) > len(shown) else f"all {len(numeric)}"
        caption = f"Histograms of {which} numeric features (train split)"
        drawn.append(figure(out.draw(fig, "feature-histograms"), caption))
    parts.append(figures(drawn))
    return parts


def _pixel_stats(name: str, f: dict[str, Any]) -> Markup:
    means = f.get("pixelMean") or []
    stds = f.get("pixelStd") or []
    channels = max(len(means), len(stds))
    label = ["grey"] if channels == 1 else ["red", "green", "blue", "alpha"][:channels]
    rows = [
        [label[i] if i < len(label) else i, means[i] if i < len(means) else None, stds[i] if i < len(stds) else None]
        for i in range(channels)
    ]
    size = f"{fmt(f.get('height'))} x {fmt(f.get('width'))} x {fmt(f.get('channels'))}"
    heading = f"Pixels of {name}: {fmt(f.get('count'))} images of {size}"
    return Markup(f"<h4>{esc(heading)}</h4>") + table(["channel", "mean (0..1)", "std (0..1)"], rows)


def _pixel_histogram(name: str, f: dict[str, Any], out: Output) -> Markup:
    hist = as_dict(f.get("pixelHistogram"))
    edges, freqs = hist.get("edges") or [], hist.get("frequencies") or []
    if len(edges) != len(freqs) + 1 or not freqs:
        return Markup("")
    fig = plots.pixel_histogram(name, edges, freqs)
    return figure(out.draw(fig, f"pixels-{name}"), f"Pixel histogram of {name}, train split")
