"""The report's pieces: an HTML page, readable offline, of sections that show what workloads published.

- `page`: the page (a Jinja2 template with inline CSS), a `Section` per resource, its phase badge and
  conditions; `write_page` writes `report.html` atomically.
- `dataset`, `model`, `sweep`: renderers of artifacts, `render(section, spec, out)`: a prepared dataset (its
  manifest), a trained model (result, metrics, plots, model card, history), a sweep (leaderboard, top two,
  its best trial as a model). They read through `slipway_trainer.storage` (any fsspec URL) and the contracts of
  `slipway_trainer.artifacts`; an artifact that is missing or breaks its contract is said in its section.
- `html` (escaped pieces), `markdown` (markdown-it-py, raw HTML off), `plots` (matplotlib Agg), `files`.

Which renderer serves which kind of resource, and the order of the sections, are the caller's:
`slipway_operator.report.journey_report` assembles the journey's page. Everything shown from a spec, a status
or an artifact is escaped; the page has no JavaScript and no network reference (its PNGs lie beside it).

This package must never import torch, ray, kopf or kubernetes (the import-linter contracts in pyproject.toml):
matplotlib, Jinja2, markdown-it-py and the store only.
"""

from __future__ import annotations

from slipway_trainer.report import dataset, model, sweep
from slipway_trainer.report.files import Output
from slipway_trainer.report.html import Markup, as_dict, code, facts, fmt, lineage, note, pairs, table
from slipway_trainer.report.markdown import markdown_html
from slipway_trainer.report.page import REPORT, Renderer, Section, conditions_table, write_page

__all__ = [
    "REPORT",
    "Markup",
    "Output",
    "Renderer",
    "Section",
    "as_dict",
    "code",
    "conditions_table",
    "dataset",
    "facts",
    "fmt",
    "lineage",
    "markdown_html",
    "model",
    "note",
    "pairs",
    "sweep",
    "table",
    "write_page",
]
