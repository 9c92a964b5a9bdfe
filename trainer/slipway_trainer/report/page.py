"""The page: a section per resource (its kind and name, phase badge, message, and what its renderer added),
an overview table linking them, the CSS inline; written atomically as `report.html`.

The page is the Jinja2 template `templates/page.html.j2` (autoescape on; every value goes through `html.esc`,
so it is formatted for people and escaped unless it is Markup). A section is filled by a renderer of the
artifacts it points at (`dataset`, `model`, `sweep`, or the caller's own); which renderer fills which section,
and in which order they come, is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from slipway_trainer.report.files import Output
from slipway_trainer.report.html import Markup, as_dict, esc, note, slug, table

REPORT = "report.html"
GOOD = {"Succeeded", "Available"}
BAD = {"Failed", "Invalid", "Degraded"}

# What fills a section: (the section, the resource's spec, where its PNGs go).
Renderer = Callable[["Section", dict[str, Any], Output], None]

_ENV = Environment(
    loader=PackageLoader("slipway_trainer.report", "templates"),
    autoescape=True,
    finalize=esc,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Section:
    """One resource's section: who it is (from its metadata and status) and the HTML its renderer adds."""

    kind: str
    name: str
    namespace: str
    anchor: str
    status: dict[str, Any]
    phase: str
    message: str
    summary: str = ""  # its line in the overview
    body: list[Markup] = field(default_factory=list)

    @classmethod
    def of(cls, resource: dict[str, Any], index: int, anchors: set[str]) -> Section:
        """The section of a resource in Kubernetes shape; `anchors` (those taken so far) keeps ids unique."""
        meta = as_dict(resource.get("metadata"))
        status = as_dict(resource.get("status"))
        kind = str(resource.get("kind") or "Unknown")
        name = str(meta.get("name") or f"resource-{index + 1}")
        anchor = f"{slug(kind)}-{slug(name)}"
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

    @property
    def tone(self) -> str:
        return "ok" if self.finished else "bad" if self.failed else "busy"

    @property
    def kind_slug(self) -> str:
        return slug(self.kind)

    @property
    def progress(self) -> Any:
        return self.status.get("progress")

    @property
    def failure_title(self) -> str:
        """`Failed (Reason)`, unless the message already starts with the reason."""
        why = reason(self.status)
        return self.phase + (f" ({why})" if why and not self.message.startswith(why) else "")

    def fill(self, render: Renderer, spec: dict[str, Any], out: Output) -> None:
        """Fill the section with `render` (of the resource's spec); if it fails, the section says why."""
        try:
            render(self, spec, out)
        except Exception as err:  # one broken resource must not take the report down
            self.body.append(note(f"This section could not be completed: {type(err).__name__}: {err}"))

    def add(self, heading: str, build: Callable[[], Iterable[Markup]]) -> None:
        """A subsection; if building it fails, the subsection says why and the rest goes on."""
        try:
            parts = [p for p in build() if p]
        except Exception as err:
            parts = [note(f"Could not show this: {type(err).__name__}: {err}")]
        if parts:
            self.body.append(Markup(f"<h3>{esc(heading)}</h3>" + "".join(parts)))

    def missing(self, what: str) -> Markup:
        """Say an artifact is missing where it should be there (a finished resource); stay quiet otherwise."""
        return note(f"Missing: {what}.") if self.finished else Markup("")

    def absent(self, what: str, problem: str = "") -> Markup:
        """An artifact not shown: unreadable (`problem`, its contract's complaint) always said, missing as above."""
        return note(f"Unreadable: {what}: {problem}") if problem else self.missing(what)


def reason(status: dict[str, Any]) -> str:
    """The reason of the condition that explains the phase: Failed or Degraded when true, else Ready's."""
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


def render_page(title: str, sections: list[Section]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return _ENV.get_template("page.html.j2").render(title=title, sections=sections, generated=generated)


def write_page(out_dir: Path, title: str, sections: list[Section]) -> Path:
    """Write out_dir/report.html; a reader sees the old page or the new one, never a part."""
    path = out_dir / REPORT
    partial = out_dir / f".{REPORT}.partial"
    partial.write_text(render_page(title, sections), encoding="utf-8")
    partial.replace(path)
    return path
