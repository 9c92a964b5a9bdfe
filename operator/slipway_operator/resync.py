"""When each resource's next pass is due, and one pass at a time per resource.

A resource gets a pass when the watch brings something new about it (handlers.py: it appears, or its spec or
annotations change) and again every `interval` seconds after its last pass (a run reads its job's progress, a
ModelDeployment judges its canary and health). The periodic passes run here, on a few threads of the operator's
own, instead of one Kopf timer per resource: Kopf's timers put a finalizer on every resource (a run could not be
deleted while the operator was away) and each resource's first pass cost the API server two PATCHes of it.
No Kopf and no Kubernetes here: `run` is given a key and does the pass.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Key = tuple[str, str, str]  # kind, namespace, name

LOG = logging.getLogger(__name__)
TICK_SECONDS = 0.5


class Resync:
    def __init__(self, run: Callable[[Key], None], workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.run, self.clock = run, clock
        self._workers = workers
        self._due: dict[Key, tuple[float, float]] = {}  # key -> (when next, interval)
        self._triggers: dict[Key, str] = {}  # key -> what its last pass at the watch's news was made for
        self._locks: dict[Key, threading.Lock] = {}
        self._busy: set[Key] = set()
        self._mutex = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def lock(self, key: Key) -> threading.Lock:
        """Held for the whole of a pass of `key`, whoever makes it (the watch's handler or this scheduler)."""
        with self._mutex:
            return self._locks.setdefault(key, threading.Lock())

    def changed(self, key: Key, trigger: str) -> bool:
        """Whether `trigger` (what of the resource brings a pass at once) differs from the last one seen."""
        with self._mutex:
            known, self._triggers[key] = self._triggers.get(key), trigger
        return known != trigger

    def passed(self, key: Key, interval: float) -> None:
        """`key` just had a pass (or was first seen): its next one is `interval` from now."""
        with self._mutex:
            self._due[key] = (self.clock() + interval, interval)

    def forget(self, key: Key) -> None:
        with self._mutex:
            self._due.pop(key, None)
            self._locks.pop(key, None)
            self._triggers.pop(key, None)

    def due(self) -> list[Key]:
        """The keys whose pass is due and not already under way (marked under way)."""
        now = self.clock()
        with self._mutex:
            ready = [k for k, (when, _) in self._due.items() if when <= now and k not in self._busy]
            self._busy.update(ready)
        return ready

    def pass_of(self, key: Key) -> None:
        try:
            with self.lock(key):
                self.run(key)
        except Exception:  # a pass that failed is tried again at its next tick
            LOG.exception("the periodic pass of %s %s/%s failed; trying again at its next tick", *key)
        finally:
            with self._mutex:
                self._busy.discard(key)
                if key in self._due:
                    interval = self._due[key][1]
                    self._due[key] = (self.clock() + interval, interval)

    def start_once(self) -> None:
        """Starts the scheduler thread, in the caller's context (Kopf's Event poster is found through it), the first
        time it is called."""
        with self._mutex:
            if self._thread is not None or self._stopped.is_set():
                return
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="slipway-resync")
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._loop,), name="slipway-resync", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        assert self._pool is not None
        while not self._stopped.wait(TICK_SECONDS):
            for key in self.due():
                self._pool.submit(contextvars.copy_context().run, self.pass_of, key)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
