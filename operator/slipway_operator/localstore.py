"""`slipway run`'s stand-in for the API server: resources as JSON files under `<state>/resources/`, with the
metadata Kubernetes would give them (uid, generation, creationTimestamp), and Events in `<state>/events.jsonl`.
`slipway get/describe/logs` read the same files."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

NAMESPACE = "default"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def matches(labels: dict[str, str], selector: str) -> bool:
    """A label selector in its query-parameter form (`app=x,tier in (a,b),!legacy`)."""
    for raw in re.split(r",(?![^(]*\))", selector) if selector else []:
        term = raw.strip()
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (labels.get(key) in values) != (op == "in"):
                return False
        elif "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, _, value = term.partition("=")
            if labels.get(key) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class LocalStore:
    """Resources by (kind, name) in one namespace, persisted after every change."""

    def __init__(self, state: Path) -> None:
        self.dir = state / "resources"
        self.events_file = state / "events.jsonl"
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(self.dir.glob("*/*.json")) if self.dir.exists() else []:
            obj = json.loads(path.read_text())
            self.objects[obj["kind"], obj["metadata"]["name"]] = obj

    def _path(self, kind: str, name: str) -> Path:
        return self.dir / kind.lower() / f"{name}.json"

    def save(self, obj: dict[str, Any]) -> None:
        path = self._path(obj["kind"], obj["metadata"]["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
        tmp.replace(path)
        self.objects[obj["kind"], obj["metadata"]["name"]] = obj

    def upsert(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a manifest as a resource: (the resource, whether its spec is new or changed)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        old = self.objects.get((kind, name))
        if old is not None and old["spec"] == manifest["spec"]:
            old["metadata"]["labels"] = manifest["metadata"].get("labels", {})
            self.save(old)
            return old, False
        generation = int(old["metadata"]["generation"]) + 1 if old else 1
        obj = {
            "apiVersion": manifest["apiVersion"],
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": hashlib.sha256(f"{kind}/{name}/{now()}".encode()).hexdigest()[:32],
                "generation": generation,
                "labels": manifest["metadata"].get("labels", {}),
                "creationTimestamp": now(),
            },
            "spec": manifest["spec"],
            "status": {},
        }
        self.save(obj)
        return obj, True

    def update_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """As a merge patch would: keys set to None go away."""
        merged = {**(obj.get("status") or {}), **status}
        obj["status"] = {k: v for k, v in merged.items() if v is not None}
        self.save(obj)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"time": now(), "kind": obj["kind"], "name": obj["metadata"]["name"], "type": type_}
        with self.events_file.open("a") as f:
            f.write(json.dumps({**record, "reason": reason, "message": message}) + "\n")

    def events(self, kind: str, name: str) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        records = [json.loads(line) for line in self.events_file.read_text().splitlines() if line.strip()]
        return [r for r in records if r["kind"] == kind and r["name"] == name]

    def find(self, ref: str) -> dict[str, Any] | None:
        """By `name` or `Kind/name` (kind case-insensitive)."""
        kind, _, name = ref.rpartition("/")
        found = [o for (k, n), o in self.objects.items() if n == name and (not kind or k.lower() == kind.lower())]
        return found[0] if len(found) == 1 else None

    # -- the Cluster interface the reconcile pass reads dependencies through ------------------------------------

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def create(self, obj: dict[str, Any]) -> None:
        """A resource a controller made (a retrain run): stored like a manifest, with its labels and annotations;
        `slipway run` picks it up on its next pass."""
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            return
        created, _ = self.upsert(obj)
        created["metadata"]["annotations"] = dict(obj["metadata"].get("annotations") or {})
        created["metadata"]["ownerReferences"] = list(obj["metadata"].get("ownerReferences") or [])
        self.save(created)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        obj = self.objects.pop((kind, name), None)
        if obj is not None:
            self._path(kind, name).unlink(missing_ok=True)

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        return [
            o
            for (k, _), o in sorted(self.objects.items())
            if k == kind and matches(o["metadata"].get("labels") or {}, label_selector)
        ]
