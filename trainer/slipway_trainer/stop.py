"""Stopping when the pod is going away: a checkpoint of the last finished epoch inside the grace period.

Kueue preempts a run by suspending its RayJob; KubeRay then deletes the Ray pods, and a drained node evicts them.
Ray does not pass SIGTERM on to the training workers, so the pods' preStop hook (the operator's builders) creates a
stop file instead (`artifacts.STOP_FILE`, named by `STOP_FILE_ENV`). The training loop looks for it between
batches; when it is there, it writes the checkpoint it has not written yet (a run that checkpoints every N epochs
keeps the epoch it had finished, not the one N epochs back), disarms (the hook waits while a loop is armed) and
waits to be killed: the resumed run starts at the next epoch, and only the unfinished epoch is trained again.

Every rank looks: data-parallel ranks hold the same weights, so the rank whose pod goes away (all of them when Kueue
preempts the run, one when its node is drained) writes the checkpoint itself. The other ranks wait in their next
gradient all-reduce; Ray Train restarts the group from that checkpoint once the pod is gone, unless the whole job
goes with it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from slipway_trainer.artifacts import STOP_ARMED_SUFFIX, STOP_FILE_ENV

HOLD_SECONDS = 600.0  # how long a stopped loop waits to be killed before it gives up waiting


class StopRequested(Exception):
    """The pod is being deleted: stop training, keep what is finished."""


class StopRequest:
    """The stop file of this pod, when the workload runs where one can appear (a Ray pod); else never requested."""

    def __init__(self, path: str | None = None) -> None:
        path = path if path is not None else os.environ.get(STOP_FILE_ENV)
        self.path = Path(path) if path else None

    @property
    def possible(self) -> bool:
        return self.path is not None

    def requested(self) -> bool:
        return self.path is not None and self.path.exists()

    def check(self) -> None:
        if self.requested():
            raise StopRequested(str(self.path))

    @property
    def armed_file(self) -> Path | None:
        return Path(f"{self.path}{STOP_ARMED_SUFFIX}{os.getpid()}") if self.path is not None else None

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """A loop trains here meanwhile: the preStop hook waits for its checkpoint."""
        if self.armed_file is not None:
            self.armed_file.touch()
        try:
            yield
        finally:
            self.disarm()

    def disarm(self) -> None:
        """Nothing more to keep: the hook may let the pod go."""
        if self.armed_file is not None:
            self.armed_file.unlink(missing_ok=True)

    def hold(self, seconds: float | None = None) -> None:
        """Wait to be killed; raise if that does not come (a stop file left behind with no deletion)."""
        seconds = HOLD_SECONDS if seconds is None else seconds
        time.sleep(seconds)
        raise RuntimeError(f"asked to stop by {self.path}, but the pod was not deleted within {seconds:.0f} s")
