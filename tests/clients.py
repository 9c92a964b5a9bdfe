"""A steady client for the tests that judge rollouts on real traffic: requests sent in a background thread until
the `with` block ends, the HTTP statuses counted in `codes` (0 when nothing answered)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any


def post(url: str, body: bytes, timeout: float = 30) -> int:
    """POST a JSON body; the answer's HTTP status (0 when nothing answered)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


class Background:
    """Calls `send` (one request, its HTTP status) again and again, `pause` seconds apart, until stopped."""

    def __init__(self, send: Callable[[], int], pause: float = 0.05) -> None:
        self.send, self.pause = send, pause
        self.codes: Counter[int] = Counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.codes[self.send()] += 1
            self.stopped.wait(self.pause)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)
