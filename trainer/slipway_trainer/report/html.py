"""The small HTML pieces every section is built of: values formatted for people, escaped, as `Markup`.

`Markup` is markupsafe's (what Jinja2 puts in a page as it is); `esc` escapes with the standard library's
`html.escape`, so the page's entities (`&quot;`, `&#x27;`) are the same wherever a value comes from.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from markupsafe import Markup

__all__ = [
    "Markup",
    "as_dict",
    "code",
    "details",
    "esc",
    "facts",
    "figure",
    "figures",
    "fmt",
    "lineage",
    "note",
    "pairs",
    "row",
    "slug",
    "table",
]


def esc(value: Any) -> Markup:
    """Any value as escaped HTML text; Markup as it is."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(value if isinstance(value, str) else fmt(value), quote=True))


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


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty one: statuses and specs are read as they come."""
    return value if isinstance(value, dict) else {}


def slug(text: str) -> str:
    found = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return found[:60] or "x"


def row(cells: Iterable[Any], cls: str = "") -> Markup:
    klass = f' class="{esc(cls)}"' if cls else ""
    return Markup(f"<tr{klass}>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + "</tr>")


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any] | Markup], cls: str = "") -> Markup:
    """An HTML table; every cell is escaped unless it is Markup. A row may be one made by `row` already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(r if isinstance(r, Markup) else row(r) for r in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    return Markup(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def facts(items: Iterable[tuple[str, Any]]) -> Markup:
    """A definition list of the pairs whose value is not empty."""
    shown = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v not in (None, "", [], {}))
    return Markup(f"<dl>{shown}</dl>") if shown else Markup("")


def note(text: str, cls: str = "missing") -> Markup:
    return Markup(f'<p class="{esc(cls)}">{esc(text)}</p>')


def code(value: Any) -> Markup:
    return Markup(f"<code>{esc(value)}</code>")


def details(summary: str, content: Markup, open_: bool = False) -> Markup:
    """A folded block; `content` is Markup (nothing when it is empty)."""
    if not content:
        return Markup("")
    return Markup(f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{esc(content)}</details>")


def figure(file: str, caption: str) -> Markup:
    return Markup(
        f'<figure><img src="{esc(file)}" alt="{esc(caption)}" loading="lazy">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def figures(items: Iterable[Markup]) -> Markup:
    shown = "".join(i for i in items if i)
    return Markup(f'<div class="figures">{shown}</div>') if shown else Markup("")


def pairs(mapping: Any) -> str:
    """`key value, ...` with the values formatted for people (metrics, parameters, counts)."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in as_dict(mapping).items())


def lineage(found: Any) -> str:
    """Where a model came from (`dataset digits@v1, run mlp`), its empty entries left out."""
    return ", ".join(f"{k} {v}" for k, v in as_dict(found).items() if v)
