"""The journey report: one HTML page per run of `slipway run`, readable offline, with the PNGs beside it.

`journey_report(resources, out_dir)` takes the journey's resources as plain dicts (apiVersion, kind, metadata,
spec, status — the status as the operator writes it), reads what their workloads published (the dataset
manifest, the run's report/ and model/, the sweep's leaderboard and top-two comparison) through
`slipway_trainer.storage` (any fsspec URL), and writes `out_dir/report.html`: one section per resource, in
journey order (DatasetPrep, TrainingRun, TuningSweep, ModelDeployment), each with its phase and message.

Everything shown from a spec, a status or an artifact is HTML-escaped. The page has inline CSS, no
JavaScript and no network reference: the plots are PNG files copied (or drawn with matplotlib's Agg renderer)
next to report.html and referenced by relative names. A missing artifact, or a resource that failed, is said
in its section; nothing in one section can stop the others from being written.

This module is imported by the operator's `slipway run`, so it must never import torch, ray, kopf or
kubernetes (the import-linter contracts in pyproject.toml): matplotlib, json, html and the store only.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from slipway_trainer import storage

REPORT = "report.html"
ORDER = {"DatasetPrep": 0, "TrainingRun": 1, "TuningSweep": 2, "ModelDeployment": 3}
GOOD = {"Succeeded", "Available"}
BAD = {"Failed", "Invalid", "Degraded"}
MAX_FEATURES = 200  # rows of the feature table
MAX_HISTOGRAMS = 12  # numeric features drawn as small histograms
MAX_CLASSES_PLOTTED = 40
MAX_HISTORY_ROWS = 60
SWEEP_PLOT = "comparison.png"
# The plots a run publishes under report/, in the order they are shown, and what each one is.
PLOTS = {
    "training_curves.png": "Training curves (train and validation, per epoch)",
    "gan_losses.png": "Generator and discriminator losses",
    "confusion_matrix.png": "Confusion matrix on the test split",
    "saliency.png": "Saliency: what the model looks at in a few test images",
    "samples.png": "Generated samples",
    "comparison.png": "The objective against each hyperparameter (orange: trials stopped early)",
}


class Markup(str):
    """Text that is already HTML (built here, its parts escaped): put in the page as it is."""


def esc(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(value if isinstance(value, str) else fmt(value), quote=True)


def fmt(value: Any) -> str:
    """A value for people: integers with separators, floats to 4 significant digits, containers as JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.4g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


def _cell(value: Any) -> str:
    return value if isinstance(value, Markup) else esc(value)


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], cls: str = "") -> Markup:
    """An HTML table; every cell is escaped unless it is Markup."""
    head = "".join(f"<th>{_cell(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    return Markup(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def facts(pairs: Iterable[tuple[str, Any]]) -> Markup:
    """A definition list of the pairs whose value is not empty."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{_cell(v)}</dd>" for k, v in pairs if v not in (None, "", [], {}))
    return Markup(f"<dl>{items}</dl>") if items else Markup("")


def note(text: str, cls: str = "missing") -> Markup:
    return Markup(f'<p class="{cls}">{esc(text)}</p>')


def code(value: Any) -> Markup:
    return Markup(f"<code>{esc(value)}</code>")


# -- the entry point -------------------------------------------------------------------------------------------


def journey_report(resources: list[dict[str, Any]], out_dir: Path, title: str = "Slipway journey") -> Path:
    """Write out_dir/report.html (+ PNGs beside it), openable offline; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(
        (r if isinstance(r, dict) else {} for r in resources),
        key=lambda r: ORDER.get(str(r.get("kind")), len(ORDER)),
    )  # sorted() is stable: resources of one kind keep the order they were given in
    sections: list[Section] = []
    anchors: set[str] = set()
    for index, resource in enumerate(ordered):
        section = Section.of(resource, index, anchors)
        try:
            RENDERERS.get(section.kind, _render_other)(section, resource, _Output(out_dir, section.anchor))
        except Exception as err:  # one broken resource must not take the report down
            section.body.append(note(f"This section could not be completed: {type(err).__name__}: {err}"))
        sections.append(section)
    path = out_dir / REPORT
    partial = out_dir / f".{REPORT}.partial"
    partial.write_text(_page(title, sections), encoding="utf-8")
    partial.replace(path)  # a reader sees the old page or the new one, never a part
    return path


@dataclass
class Section:
    kind: str
    name: str
    namespace: str
    anchor: str
    status: dict[str, Any]
    phase: str
    message: str
    summary: str = ""
    body: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, resource: dict[str, Any], index: int, anchors: set[str]) -> Section:
        meta = _dict(resource.get("metadata"))
        status = _dict(resource.get("status"))
        kind = str(resource.get("kind") or "Unknown")
        name = str(meta.get("name") or f"resource-{index + 1}")
        anchor = f"{_slug(kind)}-{_slug(name)}"
        while anchor in anchors:
            anchor = f"{anchor}-{index + 1}"
        anchors.add(anchor)
        phase = str(status.get("phase") or "Unknown")
        return cls(
            kind, name, str(meta.get("namespace") or ""), anchor, status, phase, str(status.get("message") or "")
        )

    @property
    def failed(self) -> bool:
        return self.phase in BAD

    @property
    def finished(self) -> bool:
        return self.phase in GOOD

    def add(self, heading: str, build: Callable[[], Iterable[str]]) -> None:
        """A subsection; if building it fails, the subsection says why and the rest goes on."""
        try:
            parts = [p for p in build() if p]
        except Exception as err:
            parts = [note(f"Could not show this: {type(err).__name__}: {err}")]
        if parts:
            self.body.append(f"<h3>{esc(heading)}</h3>" + "".join(parts))

    def missing(self, what: str) -> Markup:
        """Say an artifact is missing where it should be there (a finished resource); stay quiet otherwise."""
        return note(f"Missing: {what}.") if self.finished else Markup("")


class _Output:
    """Where a section's PNGs go: beside report.html, named after the section so names never clash."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix

    def path(self, name: str) -> tuple[Path, str]:
        file = f"{self.prefix}-{_slug(name.removesuffix('.png'))}.png"
        return self.folder / file, file

    def copy(self, uri: str, name: str) -> str:
        path, file = self.path(name)
        path.write_bytes(storage.read_bytes(uri))
        return file

    def draw(self, fig: Figure, name: str) -> str:
        path, file = self.path(name)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return file


def figure(file: str, caption: str) -> Markup:
    return Markup(
        f'<figure><img src="{esc(file)}" alt="{esc(caption)}" loading="lazy">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def figures(items: list[Markup]) -> Markup:
    return Markup(f'<div class="figures">{"".join(items)}</div>') if items else Markup("")


# -- reading artifacts -----------------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60] or "x"


def read_json(uri: str | None) -> Any:
    """The JSON at `uri`, or None when there is no such file (or no URI)."""
    if not uri or not storage.exists(uri):
        return None
    return storage.read_json(uri)


def read_text(uri: str | None) -> str | None:
    if not uri or not storage.exists(uri):
        return None
    return storage.read_bytes(uri).decode("utf-8", errors="replace")


def list_pngs(folder_uri: str) -> list[str]:
    """The PNG files directly in a folder, known plots first in their order, then the others by name."""
    fs, path = storage.resolve(folder_uri)
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = {posixpath.basename(str(p).rstrip("/")) for p in entries}
    pngs = [n for n in names if n.lower().endswith(".png")]
    known = list(PLOTS)
    return sorted(pngs, key=lambda n: (known.index(n) if n in known else len(known), n))


def _result(artifact_uri: str | None) -> dict[str, Any]:
    """The workload's result.json (its failure reason, its timings), when it is there."""
    found = read_json(storage.join(artifact_uri, "result.json")) if artifact_uri else None
    return _dict(found)


# -- the page --------------------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header,main>section,nav{max-width:1180px;margin:0 auto}
header{padding:24px 24px 8px}header h1{margin:0 0 4px;font-size:26px}
nav,main>section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:16px 24px;margin-bottom:18px}
h2{margin:0 0 6px;font-size:21px}h3{margin:22px 0 8px;font-size:16px;border-bottom:1px solid #e6e9ef}
h4,h5,h6{margin:14px 0 6px;font-size:15px}
.kind{color:#5b6475;font-weight:500}.muted,.meta{color:#5b6475;font-size:13px;margin:0}
.phase{display:inline-block;padding:1px 10px;border-radius:10px;font-size:13px;font-weight:600;vertical-align:middle;
background:#e4e7ec;color:#3a4150}
.phase-ok{background:#dff3e4;color:#17692f}.phase-bad{background:#fde2e1;color:#a3221b}
.phase-busy{background:#fff1d6;color:#8a5a00}
.failure{border-left:4px solid #c62828;background:#fdecea;padding:8px 12px;margin:10px 0}
.notice{border-left:4px solid #e0a100;background:#fff8e6;padding:8px 12px;margin:10px 0}
.verdict{border-left:4px solid #2f6fd6;background:#eaf1fc;padding:8px 12px;margin:10px 0}
.missing{color:#8a5a00;font-style:italic}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13.5px}
th,td{border:1px solid #dde1e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f6}tbody tr:nth-child(even){background:#fafbfc}
tr.best td{background:#eaf7ee}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dt{color:#5b6475}dd{margin:0}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f0f2f6;padding:0 3px;border-radius:3px;
word-break:break-all}
pre{background:#f0f2f6;padding:8px;overflow-x:auto}
.figures{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;max-width:100%}figure img{max-width:100%;border:1px solid #e6e9ef;background:#fff}
figcaption{font-size:13px;color:#5b6475}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
.card{border:1px solid #e6e9ef;border-radius:6px;padding:4px 16px;margin-top:6px;background:#fcfcfd}
"""


def phase_badge(phase: str) -> Markup:
    cls = "phase-ok" if phase in GOOD else "phase-bad" if phase in BAD else "phase-busy"
    return Markup(f'<span class="phase {cls}">{esc(phase)}</span>')


def _page(title: str, sections: list[Section]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    overview = table(
        ["kind", "name", "phase", "summary"],
        [
            [s.kind, Markup(f'<a href="#{esc(s.anchor)}">{esc(s.name)}</a>'), phase_badge(s.phase), s.summary]
            for s in sections
        ],
    )
    body = "".join(_section_html(s) for s in sections) or "<section><p>No resources.</p></section>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'; object-src 'none'; "
        "base-uri 'none'; form-action 'none'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><p class="muted">Generated {esc(generated)}: '
        f"{len(sections)} resource{'s' if len(sections) != 1 else ''}</p></header>"
        f"<nav><h2>Overview</h2>{overview}</nav><main>{body}</main></body></html>\n"
    )


def _section_html(s: Section) -> str:
    where = " · ".join(x for x in (f"namespace {s.namespace}" if s.namespace else "", s.kind) if x)
    head = (
        f'<section id="{esc(s.anchor)}" class="resource kind-{esc(_slug(s.kind))}">'
        f'<h2><span class="kind">{esc(s.kind)}</span> {esc(s.name)} {phase_badge(s.phase)}</h2>'
        f'<p class="meta">{esc(where)}</p>'
    )
    if s.failed:
        reason = _reason(s.status)
        prefix = f"{s.phase}" + (f" ({reason})" if reason and not s.message.startswith(reason) else "")
        lead = f'<div class="failure"><strong>{esc(prefix)}</strong>: {esc(s.message or "no message")}</div>'
    elif s.finished:
        lead = f'<p class="message">{esc(s.message)}</p>' if s.message else ""
    else:
        progress = s.status.get("progress")
        text = s.message or "no message yet"
        lead = (
            f'<div class="notice"><strong>Not finished ({esc(s.phase)})</strong>: {esc(text)}'
            + (f" — {esc(progress)}" if progress else "")
            + ". What it has published so far is shown below.</div>"
        )
    return head + lead + "".join(s.body) + "</section>"


def _reason(status: dict[str, Any]) -> str:
    for wanted in ("Failed", "Ready", "Degraded"):
        for c in status.get("conditions") or []:
            if isinstance(c, dict) and c.get("type") == wanted and c.get("reason"):
                if wanted != "Ready" and c.get("status") != "True":
                    continue
                return str(c["reason"])
    return ""


def conditions_table(status: dict[str, Any]) -> Markup:
    rows = [
        [c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime")]
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    ]
    return table(["type", "status", "reason", "message", "since"], rows) if rows else Markup("")


# -- DatasetPrep -----------------------------------------------------------------------------------------------


def _render_prep(s: Section, resource: dict[str, Any], out: _Output) -> None:
    status = s.status
    spec = _dict(resource.get("spec"))
    manifest_uri = status.get("manifestUri") or (
        storage.join(status["outputUri"], "manifest.json") if status.get("outputUri") else None
    )
    manifest = _dict(read_json(manifest_uri))
    rows = _dict(manifest.get("rows")) or _dict(status.get("rows"))
    if rows:
        s.summary = ", ".join(f"{k} {fmt(rows[k])}" for k in ("train", "validation", "test") if k in rows)
    if s.failed:
        reason = _result(status.get("artifactUri"))
        if reason.get("reason"):
            s.summary = f"failed: {reason['reason']}"

    def overview() -> list[str]:
        source = _dict(manifest.get("source")) or _dict(spec.get("source"))
        classes = manifest.get("classes") or []
        return [
            facts(
                [
                    ("source", code(source.get("uri")) if source.get("uri") else None),
                    ("task", manifest.get("task")),
                    ("label", manifest.get("label") or spec.get("label")),
                    ("classes", len(classes) if classes else None),
                    ("version", manifest.get("version")),
                    ("fingerprint", code(manifest.get("fingerprint") or status.get("fingerprint") or "") or None),
                    ("output", code(status["outputUri"]) if status.get("outputUri") else None),
                    ("created", manifest.get("createdAt")),
                ]
            ),
            s.missing(f"the dataset manifest ({manifest_uri or 'status.manifestUri is not set'})")
            if not manifest
            else "",
        ]

    s.add("Dataset", overview)

    def counts() -> list[str]:
        if not rows:
            return []
        order = ["read", "cleaned", "train", "validation", "test", "total"]
        keys = [k for k in order if k in rows] + [k for k in rows if k not in order]
        return [table(keys, [[rows[k] for k in keys]])]

    s.add("Rows", counts)

    def dropped() -> list[str]:
        found = manifest.get("dropped") if manifest else status.get("droppedRows")
        if found is None:
            return []
        drops = _dict(found)
        if not drops:
            return [note("No row was dropped while cleaning.", "message")]
        ordered = sorted(drops.items(), key=lambda kv: -int(kv[1]) if isinstance(kv[1], int) else 0)
        return [table(["reason", "rows"], [*ordered, ("total", sum(v for v in drops.values() if isinstance(v, int)))])]

    s.add("Dropped rows, by reason", dropped)

    privacy = _dict(manifest.get("privacy"))
    if privacy.get("droppedColumns") or privacy.get("hashedColumns"):
        s.add(
            "Privacy",
            lambda: [
                facts(
                    [
                        ("dropped columns", ", ".join(map(str, privacy.get("droppedColumns") or []))),
                        ("hashed columns", ", ".join(map(str, privacy.get("hashedColumns") or []))),
                        ("hash", privacy.get("hash")),
                    ]
                )
            ],
        )
    if manifest:
        s.add("Label distribution", lambda: _label_distribution(manifest, out))
        s.add("Features (train split, raw values)", lambda: _features(manifest, out))


def _class_names(manifest: dict[str, Any]) -> dict[str, str]:
    classes = [str(c) for c in manifest.get("classes") or []]
    names = [str(n) for n in manifest.get("classNames") or []]
    return {c: names[i] for i, c in enumerate(classes) if i < len(names) and names[i] != c}


def _label_distribution(manifest: dict[str, Any], out: _Output) -> list[str]:
    balance = {k: _dict(v) for k, v in _dict(manifest.get("classBalance")).items()}
    if not balance:
        return []
    splits = [s for s in ("train", "validation", "test") if s in balance] + [
        s for s in balance if s not in ("train", "validation", "test")
    ]
    label = str(manifest.get("label") or "label")
    if manifest.get("task") == "regression":
        values: list[float] = []
        weights: list[float] = []
        for value, count in _dict(balance.get("train") or balance[splits[0]]).items():
            try:
                values.append(float(value))
                weights.append(float(count))
            except (TypeError, ValueError):
                continue
        if not values:
            return []
        fig = Figure(figsize=(6.4, 3.2))
        ax = fig.add_subplot()
        ax.hist(values, bins=20, weights=weights, color="#2f6fd6")
        ax.set_xlabel(label)
        ax.set_ylabel("rows (train)")
        ax.set_title(f"{label} on the train split")
        return [figures([figure(out.draw(fig, "label-histogram"), f"Histogram of {label} (train split)")])]
    names = _class_names(manifest)
    classes = list(dict.fromkeys(c for s in splits for c in balance[s]))
    classes.sort(key=_class_order)
    shown = sorted(classes, key=lambda c: -int(balance[splits[0]].get(c, 0)))[:MAX_CLASSES_PLOTTED]
    shown = [c for c in classes if c in shown]
    fig = Figure(figsize=(max(6.4, 0.45 * len(shown) * max(1, len(splits)) / 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        ax.bar(
            [x + (i - (len(splits) - 1) / 2) * width for x in range(len(shown))],
            [int(balance[split].get(c, 0)) for c in shown],
            width=width,
            label=split,
        )
    ax.set_xticks(
        range(len(shown)),
        [names.get(c, c) for c in shown],
        rotation=45 if len(shown) > 8 else 0,
        ha="right" if len(shown) > 8 else "center",
        fontsize=8,
    )
    ax.set_ylabel("rows")
    ax.set_title(
        f"Class balance of {label}" + (f" (the {len(shown)} largest classes)" if len(shown) < len(classes) else "")
    )
    ax.legend(fontsize=8)
    named = ["name"] if names else []
    rows = [[c, *([names.get(c, "")] if names else []), *(balance[s].get(c, 0) for s in splits)] for c in classes]
    return [
        figures([figure(out.draw(fig, "class-balance"), f"Rows per class of {label}, per split")]),
        table(["class", *named, *splits], rows),
    ]


def _class_order(value: str) -> tuple[int, float, str]:
    """Classes in numeric order when they are numbers, then by name."""
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def _features(manifest: dict[str, Any], out: _Output) -> list[str]:
    features = _dict(_dict(manifest.get("profile")).get("features"))
    if not features:
        return [note("The manifest has no data profile.")]
    parts: list[str] = []
    rows = []
    for name, raw in list(features.items())[:MAX_FEATURES]:
        f = _dict(raw)
        kind = f.get("type")
        if kind == "numeric":
            summary: Any = Markup(
                f"mean {esc(f.get('mean'))}, std {esc(f.get('std'))}, min {esc(f.get('min'))}, "
                f"median {esc(_dict(f.get('quantiles')).get('p50'))}, max {esc(f.get('max'))}"
            )
        elif kind == "categorical":
            top = sorted(_dict(f.get("frequencies")).items(), key=lambda kv: -float(kv[1]))[:5]
            summary = f"{fmt(f.get('distinct'))} distinct; top: " + ", ".join(
                f"{value} ({float(share):.1%})" for value, share in top
            )
        elif kind == "image":
            summary = (
                f"{f.get('height')} x {f.get('width')} x {f.get('channels')} pixels; "
                f"pixel mean {fmt(f.get('pixelMean'))}, std {fmt(f.get('pixelStd'))} (0..1)"
            )
        else:
            summary = fmt({k: v for k, v in f.items() if k not in ("type", "count", "missing")})
        rows.append([name, kind, f.get("count"), f.get("missing"), summary])
    parts.append(table(["feature", "type", "values", "missing", "mean / top values"], rows))
    if len(features) > MAX_FEATURES:
        parts.append(note(f"… and {len(features) - MAX_FEATURES} more features (see the manifest).", "muted"))
    images = [(n, _dict(f)) for n, f in features.items() if _dict(f).get("type") == "image"]
    drawn: list[Markup] = []
    for name, f in images:
        parts.append(_pixel_stats(name, f))
        drawn.append(_pixel_histogram(name, f, out))
    numeric = [
        (n, _dict(_dict(f).get("histogram")))
        for n, f in features.items()
        if _dict(f).get("type") == "numeric" and _dict(f).get("min") != _dict(f).get("max")
    ]
    if numeric:
        drawn.append(_numeric_histograms(numeric[:MAX_HISTOGRAMS], len(numeric), out))
    parts.append(figures([d for d in drawn if d]))
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
    return Markup(
        f"<h4>Pixels of {esc(name)}: {esc(f.get('count'))} images of {esc(f.get('height'))} x {esc(f.get('width'))}"
        f" x {esc(f.get('channels'))}</h4>" + table(["channel", "mean (0..1)", "std (0..1)"], rows)
    )


def _pixel_histogram(name: str, f: dict[str, Any], out: _Output) -> Markup:
    hist = _dict(f.get("pixelHistogram"))
    edges, freqs = hist.get("edges") or [], hist.get("frequencies") or []
    if len(edges) != len(freqs) + 1 or not freqs:
        return Markup("")
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.add_subplot()
    ax.bar(
        edges[:-1],
        freqs,
        width=[b - a for a, b in itertools.pairwise(edges)],
        align="edge",
        color="#555b66",
    )
    ax.set_xlabel("pixel value (0..255)")
    ax.set_ylabel("share of pixels")
    ax.set_title(f"Pixel histogram of {name} (train)")
    return figure(out.draw(fig, f"pixels-{name}"), f"Pixel histogram of {name}, train split")


def _numeric_histograms(features: list[tuple[str, dict[str, Any]]], total: int, out: _Output) -> Markup:
    columns = min(4, len(features))
    lines = math.ceil(len(features) / columns)
    fig = Figure(figsize=(3.0 * columns, 2.2 * lines))
    for i, (name, hist) in enumerate(features):
        ax = fig.add_subplot(lines, columns, i + 1)
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        if len(edges) == len(counts) + 1 and counts:
            ax.bar(
                edges[:-1],
                counts,
                width=[b - a for a, b in itertools.pairwise(edges)],
                align="edge",
                color="#2f6fd6",
            )
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    shown = f"the first {len(features)} of {total}" if total > len(features) else f"all {total}"
    return figure(out.draw(fig, "feature-histograms"), f"Histograms of {shown} numeric features (train split)")


# -- TrainingRun and TuningSweep -------------------------------------------------------------------------------


def _render_training(s: Section, resource: dict[str, Any], out: _Output) -> None:
    spec = _dict(resource.get("spec"))
    artifacts = s.status.get("artifactUri")
    result = _result(artifacts)
    _model_summary(s, result, _dict(spec.get("objective")))
    model = _dict(spec.get("model"))
    training = _dict(spec.get("training"))
    epochs = result.get("epochs", s.status.get("epoch"))
    s.add(
        "Run",
        lambda: [
            facts(
                [
                    ("dataset", _dict(spec.get("dataset")).get("ref") or _dict(spec.get("dataset")).get("uri")),
                    ("architecture", f"{model.get('architecture', '')} {fmt(model.get('params') or {})}".strip()),
                    ("objective", fmt(spec.get("objective")) if spec.get("objective") else None),
                    ("optimizer", fmt(spec.get("optimizer")) if spec.get("optimizer") else None),
                    (
                        "epochs",
                        f"{fmt(epochs)} of {fmt(training.get('epochs', s.status.get('totalEpochs')))}"
                        + (f", best epoch {fmt(result['bestEpoch'])}" if result.get("bestEpoch") else "")
                        + (" (stopped early)" if result.get("stoppedEarly") else "")
                        if epochs is not None
                        else None,
                    ),
                    ("training time", f"{fmt(result['trainSeconds'])} s" if "trainSeconds" in result else None),
                    ("resumed from", ", ".join(map(str, result.get("resumedFrom") or []))),
                    ("exports", _exports(result.get("exports"))),
                    ("model", code(s.status["modelUri"]) if s.status.get("modelUri") else None),
                    ("artifacts", code(artifacts) if artifacts else None),
                    ("lineage", _lineage(s.status.get("lineage"))),
                ]
            ),
            s.missing("the run's result.json") if artifacts and not result else "",
        ],
    )
    _evaluation(s, artifacts, out, history=True)
    s.body.append(_details("Conditions", conditions_table(s.status)))


def _render_sweep(s: Section, resource: dict[str, Any], out: _Output) -> None:
    spec = _dict(resource.get("spec"))
    artifacts = s.status.get("artifactUri")
    result = _result(artifacts)
    _model_summary(s, result, _dict(spec.get("objective")))
    best = _dict(s.status.get("bestTrial")) or _dict(result.get("bestTrial"))
    if best:
        s.summary = f"best trial {best.get('id')}: {fmt(best.get('metric'))}; " + s.summary
    trials = _dict(s.status.get("trials")) or _dict(result.get("trials"))
    s.add(
        "Sweep",
        lambda: [
            facts(
                [
                    ("search space", fmt(spec.get("searchSpace")) if spec.get("searchSpace") else None),
                    ("algorithm", spec.get("algorithm")),
                    ("scheduler", fmt(spec.get("scheduler")) if spec.get("scheduler") else None),
                    ("objective", fmt(spec.get("objective")) if spec.get("objective") else None),
                    ("trials", pairs(trials)),
                    (
                        "best trial",
                        f"{best.get('id')} ({fmt(best.get('metric'))}) with {pairs(best.get('params'))}"
                        if best
                        else None,
                    ),
                    ("trial epochs", result.get("trialEpochs")),
                    ("model", code(s.status["modelUri"]) if s.status.get("modelUri") else None),
                    ("artifacts", code(artifacts) if artifacts else None),
                    ("lineage", _lineage(s.status.get("lineage"))),
                ]
            ),
            s.missing("the sweep's result.json") if artifacts and not result else "",
        ],
    )
    board_uri = s.status.get("leaderboardUri") or (
        storage.join(artifacts, "report", "leaderboard.json") if artifacts else None
    )
    objective = str(best.get("objective") or _dict(spec.get("objective")).get("metric") or "objective")
    s.add(
        "Leaderboard",
        lambda: [*_leaderboard(s, board_uri, objective, str(best.get("id") or "")), *_comparison(s, artifacts, out)],
    )
    top_two_uri = storage.join(artifacts, "report", "top_two.json") if artifacts else None
    s.add("Is the winner really better?", lambda: _top_two(s, top_two_uri, result))
    _evaluation(s, artifacts, out, history=False, title="The best trial on the test split")
    s.body.append(_details("Conditions", conditions_table(s.status)))


def _model_summary(s: Section, result: dict[str, Any], objective: dict[str, Any]) -> None:
    metric = str(objective.get("metric") or "").removeprefix("val_").removeprefix("test_")
    metrics = _dict(s.status.get("metrics")) or _dict(result.get("metrics"))
    if s.failed:
        s.summary = f"failed: {result.get('reason') or _reason(s.status) or s.message}"
    elif metric and f"test_{metric}" in metrics:
        s.summary = f"test_{metric} {fmt(metrics[f'test_{metric}'])}"
    elif s.status.get("keyMetric"):
        s.summary = str(s.status["keyMetric"])
    elif s.status.get("progress"):
        s.summary = str(s.status["progress"])


def _exports(exports: Any) -> str:
    found = _dict(exports)
    return ", ".join(
        f"{fmt_name} ({'checked' if _dict(c).get('passed') else 'NOT checked'}, max difference "
        f"{fmt(_dict(c).get('maxAbsDifference'))})"
        for fmt_name, c in found.items()
    )


def _lineage(lineage: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in _dict(lineage).items() if v)


def pairs(mapping: Any) -> str:
    """`key value, ...` with the values formatted for people (metrics, parameters, counts)."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in _dict(mapping).items())


def _details(summary: str, content: str, open_: bool = False) -> Markup:
    if not content:
        return Markup("")
    return Markup(f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{content}</details>")


def _evaluation(s: Section, artifacts: str | None, out: _Output, history: bool, title: str = "") -> None:
    """Test metrics, plots, fairness, importance, history and the model card of a run (or a sweep's best)."""
    if not artifacts:
        s.add("Evaluation", lambda: [s.missing("status.artifactUri (where the run's outputs are)")])
        return
    if s.failed:
        s.body.append(
            note("The run failed: it published no evaluation or model. What it left is shown below.", "muted")
        )
    report_uri = storage.join(artifacts, "report")
    metrics = _dict(read_json(storage.join(report_uri, "metrics.json")))
    if title:
        s.body.append(f"<h3>{esc(title)}</h3>")
    s.add("Test metrics", lambda: _test_metrics(s, metrics))
    s.add("Plots", lambda: _plots(s, report_uri, out))
    s.add("Fairness (test split, per group)", lambda: _fairness(metrics))
    s.add("What the model relies on (permutation importance)", lambda: _importance(metrics))
    if history:
        s.add("Training history", lambda: _history(storage.join(artifacts, "history.json")))
    model_uri = s.status.get("modelUri") or storage.join(artifacts, "model")
    s.add("Model card", lambda: _model_card(s, str(model_uri)))


def _test_metrics(s: Section, metrics: dict[str, Any]) -> list[str]:
    test = _dict(metrics.get("test"))
    scalars = {f"test_{k}": v for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if not scalars:
        scalars = {k: v for k, v in _dict(s.status.get("metrics")).items() if isinstance(v, int | float)}
    if not scalars:
        return [s.missing("the test metrics (report/metrics.json)")]
    parts: list[str] = [table(["metric", "value"], scalars.items())]
    per_class = _dict(test.get("per_class"))
    if per_class:
        rows = [
            [name, *(_dict(v).get(k) for k in ("precision", "recall", "f1", "support"))]
            for name, v in per_class.items()
        ]
        parts.append(
            _details(
                f"Per class ({len(rows)} classes)",
                table(["class", "precision", "recall", "f1", "support"], rows),
                open_=len(rows) <= 12,
            )
        )
    return parts


def _plots(s: Section, report_uri: str, out: _Output) -> list[str]:
    names = [n for n in list_pngs(report_uri) if n != SWEEP_PLOT]  # the sweep's plot goes with its leaderboard
    if not names:
        return [s.missing(f"the run's plots (no PNG under {report_uri})")]
    shown = [
        figure(out.copy(storage.join(report_uri, n), n), PLOTS.get(n, n.removesuffix(".png").replace("_", " ")))
        for n in names
    ]
    return [figures(shown)]


def _fairness(metrics: dict[str, Any]) -> list[str]:
    fairness = _dict(metrics.get("fairness"))
    parts: list[str] = []
    for feature, raw in fairness.items():
        report = _dict(raw)
        if "groups" not in report:
            parts.append(note(f"{feature}: {report.get('error', 'no groups')}"))
            continue
        metric = str(report.get("metric") or "metric")
        groups = _dict(report.get("groups"))
        rows = [[group, _dict(v).get("rows"), _dict(v).get(metric)] for group, v in groups.items()]
        parts.append(
            Markup(f"<h4>{esc(feature)}: {esc(metric)} per group, largest gap {esc(report.get('largest_gap'))}</h4>")
            + table(["group", "rows", metric], rows)
        )
    return parts


def _importance(metrics: dict[str, Any]) -> list[str]:
    importance = _dict(metrics.get("importance"))
    if not importance:
        return []
    top = list(importance.items())[:15]
    more = f" (the top 15 of {len(importance)})" if len(importance) > 15 else ""
    return [
        note(f"How much the test metric worsens when one raw column is shuffled{more}.", "muted"),
        table(["column", "drop in the metric"], top),
    ]


def _history(uri: str) -> list[str]:
    history = read_json(uri)
    if not isinstance(history, list) or not history:
        return []
    keys = [k for k in ("epoch", "train_loss", "val_loss") if any(k in h for h in history)]
    keys += sorted({k for h in history for k in h if k.startswith("val_") and k != "val_loss"})[:4]
    keys += [k for k in ("learning_rate",) if any(k in h for h in history)]
    rows = [[_dict(h).get(k) for k in keys] for h in history[-MAX_HISTORY_ROWS:]]
    return [_details(f"Every epoch ({len(history)})", table(keys, rows))]


def _model_card(s: Section, model_uri: str) -> list[str]:
    card = read_text(storage.join(model_uri, "model_card.md"))
    if card is None:
        return [s.missing(f"the model card ({storage.join(model_uri, 'model_card.md')})")]
    return [
        _details(f"model_card.md ({model_uri})", Markup(f'<div class="card">{markdown_html(card)}</div>'), open_=True)
    ]


def _comparison(s: Section, artifacts: str | None, out: _Output) -> list[str]:
    uri = storage.join(artifacts, "report", SWEEP_PLOT) if artifacts else None
    if not uri or not storage.exists(uri):
        return [s.missing(f"the comparison plot ({uri or 'no artifact URI'})")]
    return [figures([figure(out.copy(uri, SWEEP_PLOT), PLOTS[SWEEP_PLOT])])]


def _leaderboard(s: Section, uri: str | None, objective: str, best: str) -> list[str]:
    board = read_json(uri)
    if not isinstance(board, list):
        return [s.missing(f"the leaderboard ({uri or 'no leaderboard URI'})")]
    paths = sorted({p for row in board for p in _dict(_dict(row).get("params"))})
    head = ["rank", "trial", *paths, objective, "epochs", "status", "error"]
    rows: list[str] = []
    for rank, raw in enumerate(board, 1):
        row = _dict(raw)
        params = _dict(row.get("params"))
        cells = [
            rank,
            row.get("trial"),
            *(params.get(p) for p in paths),
            row.get("best"),
            row.get("epochs"),
            row.get("status"),
            row.get("error") or "",
        ]
        klass = ' class="best"' if best and str(row.get("trial")) == best else ""
        rows.append(f"<tr{klass}>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return [Markup(f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")]


def _top_two(s: Section, uri: str | None, result: dict[str, Any]) -> list[str]:
    comparison = _dict(read_json(uri)) or _dict(result.get("comparison"))
    if not comparison:
        return [s.missing("the top-two comparison (report/top_two.json)")]
    if "verdict" not in comparison:
        return [note(str(comparison.get("note") or "no comparison"), "verdict")]
    low, high = [*list(comparison.get("ci95") or []), None, None][:2]
    better = bool(comparison.get("winnerIsBetter"))
    return [
        Markup(
            f'<div class="verdict"><strong>{"The winner is really better" if better else "Not distinguishable"}'
            f"</strong>: {esc(comparison['verdict'])}</div>"
        ),
        facts(
            [
                ("metric", comparison.get("metric")),
                ("first, second", f"{comparison.get('first')}, {comparison.get('second')}"),
                ("difference", comparison.get("difference")),
                ("95% interval", f"{fmt(low)} to {fmt(high)}"),
                ("bootstrap resamples", comparison.get("resamples")),
            ]
        ),
    ]


# -- ModelDeployment -------------------------------------------------------------------------------------------


def _render_deployment(s: Section, resource: dict[str, Any], out: _Output) -> None:
    status, spec = s.status, _dict(resource.get("spec"))
    endpoint = status.get("endpoint")
    name = status.get("modelName") or s.name
    replicas = _dict(status.get("replicas"))
    ready = status.get("readyReplicas") or (
        f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)}" if replicas else ""
    )
    s.summary = ", ".join(x for x in (f"{ready} ready" if ready else "", str(endpoint or "")) if x)
    source = _dict(spec.get("model"))
    rollout = _dict(spec.get("rollout"))
    s.add(
        "Serving",
        lambda: [
            facts(
                [
                    ("endpoint", code(endpoint) if endpoint else "none yet"),
                    ("inference", code(f"POST {endpoint}/v2/models/{name}/infer") if endpoint else None),
                    ("model name", name),
                    ("replicas ready", ready),
                    ("model from", ", ".join(f"{k} {v}" for k, v in source.items() if v)),
                    ("rollout", rollout.get("strategy")),
                    ("serving since", _dict(status.get("current")).get("at")),
                ]
            )
        ],
    )
    s.add("Revisions", lambda: _revisions(status))
    s.add("Traffic (stable revision, since its pods started)", lambda: _traffic(s, status))
    s.add("Drift of live inputs", lambda: _drift(s, status, spec))
    s.add("Conditions", lambda: [conditions_table(status)])
    s.add("Rollout history (newest first)", lambda: _history_revisions(status))


def _revision_row(role: str, rev: dict[str, Any]) -> list[Any]:
    return [
        role,
        rev.get("name"),
        rev.get("source"),
        code(rev.get("modelUri") or ""),
        pairs(rev.get("metrics")),
        _lineage(rev.get("lineage")),
        rev.get("at"),
    ]


def _revisions(status: dict[str, Any]) -> list[str]:
    current, canary = _dict(status.get("current")), _dict(status.get("canary"))
    rows = []
    if current:
        rows.append(_revision_row("stable", current))
    if canary:
        weight = status.get("canaryWeight")
        step = status.get("canaryStep")
        rows.append(_revision_row(f"canary ({fmt(weight)}% of traffic, step {fmt(step)})", canary))
    if not rows:
        return [note("No revision is served yet.", "muted")]
    return [table(["role", "revision", "source", "model", "test metrics", "lineage", "since"], rows)]


def _traffic(s: Section, status: dict[str, Any]) -> list[str]:
    traffic = _dict(status.get("traffic"))
    if not traffic:
        return [s.missing("traffic figures (status.traffic)")]
    rate = traffic.get("errorRate")
    p99 = traffic.get("p99LatencyMs")
    return [
        table(
            ["requests", "5xx error rate", "p99 latency"],
            [
                [
                    traffic.get("requests"),
                    f"{float(rate):.2%}" if isinstance(rate, int | float) else rate,
                    f"{fmt(p99)} ms" if p99 is not None else "no requests yet",
                ]
            ],
        )
    ]


def _drift(s: Section, status: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    drift = _dict(status.get("drift"))
    config = _dict(_dict(spec.get("monitoring")).get("drift"))
    if config.get("enabled") is False:
        return [note("Drift monitoring is off (spec.monitoring.drift.enabled: false).", "muted")]
    drifted = [str(f) for f in drift.get("driftedFeatures") or []]
    return [
        facts(
            [
                ("largest score", drift.get("score") if drift.get("score") is not None else "not measured yet"),
                ("threshold", f"{fmt(config.get('threshold'))} ({config.get('method', 'psi')})" if config else None),
                ("drifted features", ", ".join(drifted) if drifted else "none"),
                ("measured", drift.get("checkedAt")),
            ]
        )
    ]


def _history_revisions(status: dict[str, Any]) -> list[str]:
    history = [_dict(h) for h in status.get("history") or []]
    if not history:
        return [note("No earlier revision: this is the first rollout.", "muted")]
    rows = [
        [
            h.get("name"),
            h.get("outcome"),
            h.get("reason"),
            h.get("at"),
            h.get("source"),
            code(h.get("modelUri") or ""),
            pairs(h.get("metrics")),
        ]
        for h in history
    ]
    return [table(["revision", "outcome", "why", "when", "source", "model", "test metrics"], rows)]


def _render_other(s: Section, resource: dict[str, Any], out: _Output) -> None:
    s.body.append(note(f"{s.kind} is not a kind this report knows: only its phase and message are shown.", "muted"))
    s.add("Conditions", lambda: [conditions_table(s.status)])


RENDERERS: dict[str, Callable[[Section, dict[str, Any], _Output], None]] = {
    "DatasetPrep": _render_prep,
    "TrainingRun": _render_training,
    "TuningSweep": _render_sweep,
    "ModelDeployment": _render_deployment,
}


# -- markdown --------------------------------------------------------------------------------------------------

_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_html(text: str, shift: int = 2) -> str:
    """The simple markdown of model cards and leaderboards as HTML: headings (shifted down `shift` levels),
    bullet and numbered lists, pipe tables, fenced code, paragraphs; inline code, bold, italics. All text is
    escaped; nothing else (raw HTML, images, links) is interpreted."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{inline(' '.join(p.strip() for p in paragraph))}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{esc(chr(10).join(block))}</code></pre>")
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = min(len(heading.group(1)) + shift, 6)
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            flush()
            header = _cells(line)
            i += 2
            body = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append(_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{inline(c)}</th>" for c in header)
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBERED, "ol")):
            if pattern.match(line):
                flush()
                items = []
                while i < len(lines) and pattern.match(lines[i]):
                    item = pattern.match(lines[i])
                    assert item is not None
                    items.append(f"<li>{inline(item.group(1))}</li>")
                    i += 1
                out.append(f"<{tag}>{''.join(items)}</{tag}>")
                break
        else:
            if line.strip():
                paragraph.append(line)
            else:
                flush()
            i += 1
    flush()
    return "".join(out)


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def inline(text: str) -> str:
    """Inline markdown: `code`, **bold**, *italics*; everything escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it as text
        parts = [*parts[:-2], parts[-2] + "`" + parts[-1]]
    rendered = []
    for index, part in enumerate(parts):
        if index % 2:
            rendered.append(f"<code>{esc(part)}</code>")
            continue
        escaped = esc(part)
        escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
        escaped = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", escaped)
        rendered.append(escaped)
    return "".join(rendered)
