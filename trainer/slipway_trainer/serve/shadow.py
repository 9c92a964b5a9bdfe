"""Copies of live requests for a shadow candidate (`rollout.shadow`): users only ever get the stable answers.

A server with `mirror` set answers its request first, then offers the body and its own predictions to a bounded
queue (a full queue drops the copy and counts it: a shadow never slows or fails a request). A few workers POST
each copy to the shadow's servers in turn, marked `SHADOW` (a shadow answers such a request without remembering,
logging or mirroring it), and compare the shadow's predictions with this server's, row by row: labels that agree
(classification), or the symmetric relative difference |a - b| / ((|a| + |b|) / 2) of the values (regression,
0 when both are 0). The counts are in /metrics; the operator judges the stage on what was counted since it
started. With no shadow running (no address resolves) nothing is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np

from slipway_trainer.serve.peers import Peers

SHADOW = "X-Slipway-Shadow"
QUEUE = 256  # copies waiting for a worker; more are dropped
WORKERS = 4  # copies in flight at once
TIMEOUT_SECONDS = 5.0
REFRESH_SECONDS = 5.0

log = logging.getLogger(__name__)

Count = Callable[[str, int, int, float], None]  # (outcome, rows, agreed rows, summed relative difference)


def difference(a: float, b: float) -> float:
    scale = (abs(a) + abs(b)) / 2
    return abs(a - b) / scale if scale > 0 else 0.0


def compare(task: str, ours: list[Any], theirs: list[Any]) -> tuple[int, int, float]:
    """(rows compared, rows whose labels agree, summed relative difference) of two answers to the same rows."""
    pairs = list(zip(ours, theirs, strict=False))
    if task == "classification":
        return len(pairs), sum(1 for a, b in pairs if str(a) == str(b)), 0.0
    return len(pairs), 0, sum(difference(float(a), float(b)) for a, b in pairs)


class Mirror:
    def __init__(self, spec: str, model_name: str, task: str, count: Count) -> None:
        self.shadows = Peers(spec, missing_ok=True)
        self.path = f"/v2/models/{model_name}/infer"
        self.task = task
        self.count = count
        self.targets: list[str] = []
        self.queue: asyncio.Queue[tuple[dict[str, Any], list[Any]]] = asyncio.Queue(QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self._turn = 0
        self._session: aiohttp.ClientSession | None = None

    def offer(self, body: dict[str, Any], predictions: list[Any]) -> None:
        """A copy of an answered request for the shadow, if one is running; never waits."""
        if not self.targets:
            return
        try:
            self.queue.put_nowait((body, predictions))
        except asyncio.QueueFull:
            self.count("dropped", 0, 0, 0.0)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        self._tasks = [asyncio.create_task(self._refresh())]
        self._tasks += [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def _refresh(self) -> None:
        while True:
            self.targets = await self.shadows.urls()
            await asyncio.sleep(REFRESH_SECONDS)

    async def _work(self) -> None:
        while True:
            body, ours = await self.queue.get()
            targets = self.targets
            if targets:
                self._turn = (self._turn + 1) % len(targets)
                await self._send(targets[self._turn], body, ours)

    async def _send(self, url: str, body: dict[str, Any], ours: list[Any]) -> None:
        assert self._session is not None
        copy = {k: v for k, v in body.items() if k != "outputs"}  # the whole answer: its first output predicts
        try:
            data = json.dumps(copy, default=_listed)  # a gRPC request's tensors are arrays
            headers = {SHADOW: "1", "Content-Type": "application/json"}
            async with self._session.post(f"{url}{self.path}", data=data, headers=headers) as answer:
                if answer.status != 200:
                    log.debug("the shadow %s answered %s: %s", url, answer.status, await answer.text())
                    self.count("failed", 0, 0, 0.0)
                    return
                theirs = (await answer.json())["outputs"][0]["data"]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as err:
            log.debug("the shadow %s did not answer: %s", url, err)
            self.count("failed", 0, 0, 0.0)
            return
        rows, agreed, summed = compare(self.task, ours, theirs)
        self.count("answered", rows, agreed, summed)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        await self.shadows.close()


def _listed(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
