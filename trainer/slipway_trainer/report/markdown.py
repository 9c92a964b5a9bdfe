"""Markdown (model cards, leaderboards) as HTML, by markdown-it-py: CommonMark with pipe tables.

Raw HTML in the source is not interpreted (`html: False`: a model card cannot inject markup, it shows as
text), and neither are links, images or autolinks (the page references nothing outside its folder). Headings
are shifted down so a card's `#` sits under the section's own `<h2>`/`<h3>`. The output has no newlines
between tags, like the rest of the page.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

_MD = MarkdownIt("commonmark", {"html": False}).enable("table").disable(["link", "image", "autolink"])


def _shift_headings(state: StateCore) -> None:
    shift = int(state.env.get("shift", 0))
    for token in state.tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + shift, 6)}"
        token.block = False  # no newline after each block tag


_MD.core.ruler.push("shift_headings", _shift_headings)


def markdown_html(text: str, shift: int = 2) -> str:
    """`text` as HTML, its headings shifted down `shift` levels (at most to `<h6>`); all text escaped."""
    return str(_MD.render(text, {"shift": shift}))
