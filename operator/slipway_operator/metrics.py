"""The operator's own Prometheus metrics: reconcile passes, errors, durations, and resources by phase.

Served by `slipway operator --metrics-address HOST:PORT` (the chart sets 0.0.0.0:8080 in its pod)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("slipway_operator_reconciles", "Reconcile passes by kind and outcome", ["kind", "outcome"])
DURATION = Histogram(
    "slipway_operator_reconcile_seconds",
    "Time of one reconcile pass",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOURCES = Gauge("slipway_operator_resources", "Slipway resources by kind and phase", ["kind", "phase"])
EVENTS = Counter("slipway_operator_events", "Events posted by kind and reason", ["kind", "reason"])

_phases: dict[tuple[str, str, str], str] = {}
_lock = threading.Lock()


@contextmanager
def reconcile(kind: str) -> Iterator[None]:
    """Counts and times one pass; an exception counts as an error (and goes on to Kopf, which retries)."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - started)


def phase(kind: str, namespace: str, name: str, value: str | None) -> None:
    """Record a resource's phase (None: it is gone) and refresh the by-phase gauge."""
    with _lock:
        if value is None:
            _phases.pop((kind, namespace, name), None)
        else:
            _phases[kind, namespace, name] = value
        counts: dict[tuple[str, str], int] = {}
        for (k, _, _), p in _phases.items():
            counts[k, p] = counts.get((k, p), 0) + 1
        RESOURCES.clear()
        for (k, p), n in counts.items():
            RESOURCES.labels(k, p).set(n)


def reset() -> None:
    """Forget the phases seen by an earlier operator in this process (tests run several)."""
    with _lock:
        _phases.clear()
        RESOURCES.clear()


def serve(address: str) -> int:
    """Start the /metrics endpoint on `host:port` (port 0: a free one); the port it listens on."""
    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), addr=host or "127.0.0.1")
    return int(server.server_address[1])
