"""Payload logging: sampled requests, their predictions and the feedback sent for them, written to the store.

The request path only appends to a bounded in-memory buffer (`log_request`, `log_feedback`: no I/O, no
waiting); a full buffer drops the rows and counts them. A background thread writes the buffer every
`flushIntervalSeconds` as Parquet parts, partitioned by UTC date, and once more on shutdown:

    <uri>/payloads/date=2026-12-05/part-<ms>-<host>-<n>.parquet   request_id, row, time, model_version,
                                                                  <input columns>, prediction
    <uri>/feedback/date=2026-12-05/part-<ms>-<host>-<n>.parquet   request_id, row, time, model_version,
                                                                  prediction, truth, group

Privacy: the dataset's rules travel with the model (`Privacy`, from the dataset manifest the model card names):
dropped columns are never written, hashed ones are hashed with the same salt before the model or the log sees
them, and left out of the log when the server has no salt.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from slipway_trainer import storage
from slipway_trainer.artifacts import PAYLOAD_CLASS_NAMES, PAYLOAD_IMAGE
from slipway_trainer.config.serve import PayloadLog as PayloadLogConfig
from slipway_trainer.privacy import hash_values
from slipway_trainer.serve.feedback import Row

log = logging.getLogger("slipway.payloads")


@dataclass(frozen=True)
class Privacy:
    """The dataset's privacy rules, applied to each request's raw inputs."""

    dropped: tuple[str, ...] = ()
    hashed: tuple[str, ...] = ()
    salt: bytes | None = None

    def apply(self, table: pa.Table) -> pa.Table:
        """Dropped columns removed; hashed ones hashed (the model was trained on the hashes), or, without a salt,
        kept as sent (the model sees them) but marked to be left out of every log (`withheld`)."""
        table = table.drop_columns([c for c in self.dropped if c in table.column_names])
        if self.salt is None:
            return table
        for name in self.hashed:
            if name in table.column_names:
                hashed = hash_values(table.column(name), self.salt)
                table = table.set_column(table.column_names.index(name), name, hashed)
        return table

    def withheld(self, table: pa.Table) -> list[str]:
        """Columns that must not be logged as they are: hashed columns the server could not hash."""
        return [c for c in self.hashed if c in table.column_names] if self.salt is None else []


@dataclass
class _Buffer:
    payloads: list[tuple[str, float, pa.Table, list[Any]]] = field(default_factory=list)
    feedback: list[tuple[float, Row]] = field(default_factory=list)
    rows: int = 0


class PayloadLog:
    """Buffers sampled payloads and feedback; a thread writes them to `config.uri` (see the module doc)."""

    def __init__(
        self,
        config: PayloadLogConfig,
        model_version: str,
        privacy: Privacy,
        count: Callable[[str, str, int], None],  # (kind, outcome, rows): written, dropped, failed
        layout: dict[str, str] | None = None,  # written into each payload part's schema (an image model's shape)
    ) -> None:
        assert config.uri, "payloadLog.uri is set by the operator or `slipway run`"
        self.config = config
        self.uri = config.uri
        self.model_version = model_version
        self.privacy = privacy
        self.count = count
        self.layout = {k.encode(): v.encode() for k, v in (layout or {}).items()}
        self._buffer = _Buffer()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._parts = 0
        self._host = socket.gethostname().split(".")[0][:40] or "server"

    def start(self) -> None:
        self._thread.start()

    def sampled(self) -> bool:
        return self.config.sample_rate >= 1 or random.random() < self.config.sample_rate

    def log_request(self, request_id: str, table: pa.Table, predictions: list[Any], at: float) -> None:
        """Called on the request path: an append, or a drop when the buffer is full; never I/O."""
        with self._lock:
            if self._buffer.rows + table.num_rows > self.config.max_buffer_rows:
                dropped = True
            else:
                self._buffer.payloads.append((request_id, at, table, predictions))
                self._buffer.rows += table.num_rows
                dropped = False
        if dropped:
            self.count("payload", "dropped", table.num_rows)

    def log_feedback(self, rows: list[Row], at: float) -> None:
        with self._lock:
            if self._buffer.rows + len(rows) > self.config.max_buffer_rows:
                dropped = True
            else:
                self._buffer.feedback.extend((at, r) for r in rows)
                self._buffer.rows += len(rows)
                dropped = False
        if dropped:
            self.count("feedback", "dropped", len(rows))

    def close(self) -> None:
        """Stop the thread after one last flush (on shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        else:
            self.flush()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.config.flush_interval_seconds)
            self.flush()
        self.flush()  # rows buffered while the last periodic flush was writing

    def flush(self) -> None:
        with self._lock:
            buffer, self._buffer = self._buffer, _Buffer()
        for kind, rows in (("payload", _payload_rows(buffer, self)), ("feedback", _feedback_rows(buffer, self))):
            by_date: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_date.setdefault(row["time"].strftime("%Y-%m-%d"), []).append(row)
            for date, part in by_date.items():
                self._write(kind, date, part)

    def _write(self, kind: str, date: str, rows: list[dict[str, Any]]) -> None:
        self._parts += 1
        folder = "payloads" if kind == "payload" else "feedback"
        name = f"part-{int(rows[0]['time'].timestamp() * 1000)}-{self._host}-{os.getpid()}-{self._parts}.parquet"
        uri = storage.join(self.uri, folder, f"date={date}", name)
        try:
            sink = io.BytesIO()
            table = pa.Table.from_pylist(rows)
            if kind == "payload" and self.layout:  # how to read the pixels back: data/sources.py
                table = table.replace_schema_metadata(self.layout)
            pq.write_table(table, sink)
            storage.write_bytes_atomic(uri, sink.getvalue())
        except Exception as err:  # the store is down or refuses: count and go on, the server keeps serving
            log.warning("could not write %d %s rows to %s: %s", len(rows), kind, uri, err)
            self.count(kind, "failed", len(rows))
            return
        self.count(kind, "written", len(rows))


def _time(at: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at, datetime.UTC)


def _payload_rows(buffer: _Buffer, log_: PayloadLog) -> list[dict[str, Any]]:
    rows = []
    for request_id, at, table, predictions in buffer.payloads:
        withheld = log_.privacy.withheld(table)
        inputs = table.drop_columns(withheld).to_pylist()
        for i, (values, prediction) in enumerate(zip(inputs, predictions, strict=True)):
            rows.append(
                {
                    "request_id": request_id,
                    "row": i,
                    "time": _time(at),
                    "model_version": log_.model_version,
                    **values,
                    "prediction": prediction,
                }
            )
    return rows


def _feedback_rows(buffer: _Buffer, log_: PayloadLog) -> list[dict[str, Any]]:
    return [
        {
            "request_id": row.request_id,
            "row": row.row,
            "time": _time(at),
            "model_version": log_.model_version,
            "prediction": row.prediction,
            "truth": row.truth,
            "group": row.group,
        }
        for at, row in buffer.feedback
    ]


def image_layout(model: Any) -> dict[str, str] | None:
    """What a payload part of an image model says about its pixels: the column, the shape, the class names."""
    transform = model.transform
    if not transform.image:
        return None
    im = transform.image
    layout = {PAYLOAD_IMAGE: f"{im.column}:{im.height},{im.width},{im.channels}"}
    if transform.label is not None and transform.label.class_names:
        layout[PAYLOAD_CLASS_NAMES] = json.dumps(list(transform.label.class_names))
    return layout
