"""What every controller needs: the operator's settings and where each resource's artifacts live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slipway_operator.api.common import Phase


@dataclass(frozen=True)
class Settings:
    """The operator's flags, passed in (never read from the environment down here)."""

    image: str  # the trainer/server image the children run
    store_uri: str  # e.g. s3://slipway: artifacts go under <store>/<plural>/<namespace>/<name>
    storage_secret: str | None = None  # the Secret with the store's credentials, when the resource names none


def artifact_uri(settings: Settings, plural: str, namespace: str, name: str) -> str:
    return f"{settings.store_uri.rstrip('/')}/{plural}/{namespace}/{name}"


def phase_of(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("status") or {}).get("phase") or Phase.PENDING)


@dataclass(frozen=True)
class Desired:
    """The children a resource should have now, or why it has to wait for them."""

    children: list[dict[str, Any]]
    waiting_for: str | None = None
