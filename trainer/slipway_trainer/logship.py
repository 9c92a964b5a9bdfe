"""A workload's log kept with its artifacts: what the process writes to stdout and stderr (its own lines, and the
lines Ray forwards from every worker and trial, prefixed with their process) is copied to
`<artifacts>/logs/driver.log` as it goes (every few seconds, when it grew) and once more at the end, so the log is
still there after the pod or the RayCluster that ran it is gone. The process's own output is unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from slipway_trainer import storage

LIMIT_BYTES = 8 * 1024 * 1024  # the copy keeps the last 8 MiB: a log that floods the store is cut from the start
CUT = re.compile(rb"\[slipway: the first (\d+) bytes of this log are not kept\]\n")


def cut_header(dropped: int) -> bytes:
    """The first line of a copy whose start was cut: how many bytes came before it (a follower keeps its place)."""
    return f"[slipway: the first {dropped} bytes of this log are not kept]\n".encode()


def window(data: bytes) -> tuple[int, bytes]:
    """(bytes of the log that came before this copy, the copy without its header)."""
    found = CUT.match(data)
    return (int(found.group(1)), data[found.end() :]) if found else (0, data)


class LogShipper:
    """`with LogShipper(uri):` tees file descriptors 1 and 2 into a local file and copies it to `uri`."""

    def __init__(self, uri: str, interval: float = 5.0) -> None:
        self.uri = uri
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._saved: list[int] = []
        self._pending: list[bytes] = []  # per stream: what came after its last newline
        self._shipped = -1
        self._dropped = 0  # bytes trimmed from the front of the local file (it never holds over 2 x LIMIT_BYTES)

    def __enter__(self) -> LogShipper:
        handle, name = tempfile.mkstemp(prefix="slipway-log-", suffix=".log")
        os.close(handle)
        self.path = Path(name)
        self._file = self.path.open("ab", buffering=0)
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stream.flush()
            read_end, write_end = os.pipe()
            saved = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved.append(saved)
            self._pending.append(b"")
            tee = threading.Thread(target=self._tee, args=(read_end, saved, len(self._pending) - 1), daemon=True)
            self._threads.append(tee)
        self._threads.append(threading.Thread(target=self._ship_every, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _tee(self, read_end: int, original: int, stream: int) -> None:
        """Copy the stream to its own descriptor as it comes, and to the log whole lines at a time: a line that
        stderr writes in two pieces (print writes the text, then the newline) is never cut by one from stdout."""
        while chunk := os.read(read_end, 65536):
            os.write(original, chunk)
            with self._lock:
                pending = self._pending[stream] + chunk
                cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1  # a progress bar ends its lines with \r
                self._file.write(pending[:cut])
                self._pending[stream] = pending[cut:]
        os.close(read_end)

    def _ship_every(self) -> None:
        while not self._stop.wait(self.interval):
            self.ship()

    def ship(self) -> None:
        """Copy the log to the store when it grew; a store that is away now is tried again next time."""
        with self._lock:
            size = self.path.stat().st_size
            if self._dropped + size == self._shipped:
                return
            with self.path.open("rb") as f:
                f.seek(max(0, size - LIMIT_BYTES))
                data = f.read()
            if size > 2 * LIMIT_BYTES:  # keep the pod's disk free of a log nobody will read whole
                os.ftruncate(self._file.fileno(), 0)
                self._file.write(data)
                self._dropped += size - len(data)
                size = len(data)
            total, dropped = self._dropped + size, self._dropped + size - len(data)
        try:
            storage.write_bytes_atomic(self.uri, (cut_header(dropped) if dropped else b"") + data)
            self._shipped = total
        except Exception as err:  # the work goes on; the process's own output still has every line
            print(f"slipway: could not copy the log to {self.uri}: {type(err).__name__}: {err}", file=sys.__stderr__)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)  # this process's write end closes: its tee reads what is left in the pipe
        self._stop.set()
        for thread in self._threads:  # not to the pipe's end: processes started meanwhile (a local Ray) hold it
            thread.join(timeout=2)
        for saved in self._saved:
            os.close(saved)
        with self._lock:  # a last line with no newline still goes in
            for stream, pending in enumerate(self._pending):
                self._file.write(pending)
                self._pending[stream] = b""
        self.ship()
        self._file.close()
        self.path.unlink(missing_ok=True)
