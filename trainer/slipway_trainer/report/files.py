"""Reading what the workloads published, through `slipway_trainer.storage` (any fsspec URL), and writing the
page's PNGs beside it.

An artifact with a contract in `slipway_trainer.artifacts` is read through it: one that breaks its contract
(or is not JSON) comes back as the reason, for its section to say, never as an exception.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from matplotlib.figure import Figure

from slipway_trainer import storage
from slipway_trainer.artifacts import ArtifactError
from slipway_trainer.report.html import slug

T = TypeVar("T")


def read_json(uri: str | None) -> Any:
    """The JSON at `uri`, or None when there is no such file (or no URI)."""
    if not uri or not storage.exists(uri):
        return None
    return storage.read_json(uri)


def read_text(uri: str | None) -> str | None:
    if not uri or not storage.exists(uri):
        return None
    return storage.read_bytes(uri).decode("utf-8", errors="replace")


def read_artifact(reader: Callable[[Any, str], T], uri: str | None) -> tuple[T | None, str]:
    """The artifact at `uri` read by its contract (`Manifest.read`, ...): (it, ""); (None, "") when there is no
    such file; (None, why) when it is not JSON or does not match the contract."""
    try:
        data = read_json(uri)
        return (None, "") if data is None else (reader(data, str(uri)), "")
    except ArtifactError as err:
        return None, str(err)
    except ValueError as err:  # not JSON: a half-written or foreign file
        return None, f"{uri} is not JSON: {err}"


def list_pngs(folder_uri: str, known: Iterable[str] = ()) -> list[str]:
    """The PNG files directly in a folder, the `known` ones first in their order, then the others by name."""
    fs, path = storage.resolve(folder_uri)
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = {posixpath.basename(str(p).rstrip("/")) for p in entries}
    pngs = [n for n in names if n.lower().endswith(".png")]
    order = list(known)
    return sorted(pngs, key=lambda n: (order.index(n) if n in order else len(order), n))


class Output:
    """Where a section's PNGs go: beside report.html, named after the section so names never clash."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix

    def path(self, name: str) -> tuple[Path, str]:
        file = f"{self.prefix}-{slug(name.removesuffix('.png'))}.png"
        return self.folder / file, file

    def copy(self, uri: str, name: str) -> str:
        """Copy a published PNG beside the page; its file name there."""
        path, file = self.path(name)
        path.write_bytes(storage.read_bytes(uri))
        return file

    def draw(self, fig: Figure, name: str) -> str:
        """Save a drawing beside the page (matplotlib's Agg renderer, no pyplot); its file name there."""
        path, file = self.path(name)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return file
