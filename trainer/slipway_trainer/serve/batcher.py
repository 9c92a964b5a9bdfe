"""Dynamic batching, with no HTTP in sight: concurrent requests are merged into one model call of at most
`max_batch_size` rows, or whatever has arrived `max_latency_ms` after the first, whichever comes first; each
caller gets back exactly its own rows. A lone request does not wait for company that is not coming."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class Batcher:
    infer: Callable[[np.ndarray], np.ndarray]
    max_batch_size: int
    max_latency_ms: float
    on_batch: Callable[[int], None] = lambda rows: None  # metrics hook: rows in each model call
    # How many requests are in the server right now (queued or still being parsed). When every one of them is
    # already in the batch, waiting for more would only add latency, so the batch goes at once.
    in_flight: Callable[[], int] | None = None
    executor: Executor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    _queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False
    _next: _Pending | None = None  # taken from the queue, but it would have made the last batch too large

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        """Requests waiting for a model call."""
        return self._queue.qsize()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        if self._closing:
            raise RuntimeError("the batcher is closed")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(x, future))
        return await future

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self._next = self._next or await self._queue.get(), None
            batch = [first]
            rows = first.x.shape[0]
            deadline = loop.time() + self.max_latency_ms / 1000
            while rows < self.max_batch_size:
                if self.in_flight is not None and self.in_flight() <= len(batch) and self._queue.empty():
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                if rows + item.x.shape[0] > self.max_batch_size:
                    self._next = item  # it starts the next batch (alone, if it is larger than a batch itself)
                    break
                batch.append(item)
                rows += item.x.shape[0]
            await self._call(batch, rows)

    async def _call(self, batch: list[_Pending], rows: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            x = np.concatenate([p.x for p in batch]) if len(batch) > 1 else batch[0].x
            self.on_batch(rows)
            out = await loop.run_in_executor(self.executor, self.infer, x)
        except Exception as err:  # the callers get the failure; the loop keeps serving
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
        else:
            start = 0
            for p in batch:
                n = p.x.shape[0]
                if not p.future.done():
                    p.future.set_result(out[start : start + n])
                start += n
        finally:
            for _ in batch:
                self._queue.task_done()
