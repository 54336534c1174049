"""Messages to the person watching: printed, flushed, and kept in the job log."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from colabrun.jobs.errors import StorageError
from colabrun.state.storage import Storage

MAX_PENDING = 10_000  # lines kept while the storage is away
#: while training, how often the waiting log lines are appended to the job log (seconds)
FLUSH_EVERY_S = 2.0
LOG_DIR = "log"
LOG_NAME = "colabrun.log"


class Console:
    """Prints ``colabrun:`` lines and appends them to the job log (best effort).

    Args:
        out: where lines go (a notebook cell's stdout by default).
        storage: the storage edge, for the job log.
    """

    def __init__(self, *, out: TextIO | None = None, storage: Storage | None = None) -> None:
        self.out = out
        self.storage = storage
        self.log_path: Path | None = None
        #: while training, log lines wait for :meth:`flush_log` (called off the
        #: training thread): a hung Drive write must not freeze the loop
        self.deferred = False
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one append at a time: the log stays in order

    def attach_log(self, job_dir: Path) -> None:
        """Start keeping lines in ``job_dir/log/colabrun.log``."""
        self.log_path = job_dir / LOG_DIR / LOG_NAME

    def info(self, message: str) -> None:
        """A plain line."""
        self._emit(f"colabrun: {message}")

    def warn(self, message: str) -> None:
        """A line the user should not miss."""
        self._emit(f"colabrun: WARNING: {message}")

    def record(self, text: str) -> None:
        """Keep ``text``'s lines in the job log only: lines printed elsewhere already (those
        of a group's other processes, which the view shows)."""
        self._keep(text)

    def _emit(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)
        self._keep(line)

    def _keep(self, line: str) -> None:
        if self.log_path is None or self.storage is None:
            return
        with self._lock:
            self._pending.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            del self._pending[:-MAX_PENDING]
        if not self.deferred:
            self.flush_log()

    def flush_log(self) -> None:
        """Append the waiting lines to the job log; on a storage error keep them."""
        if self.log_path is None or self.storage is None:
            return
        with self._flushing:
            with self._lock:
                lines, self._pending = self._pending, []
            if not lines:
                return
            try:  # the log is a convenience: losing it must never stop training
                self.storage.makedirs(self.log_path.parent)
                self.storage.append_bytes(self.log_path, "".join(lines).encode())
            except StorageError:
                with self._lock:
                    self._pending[:0] = lines
                    del self._pending[:-MAX_PENDING]


class LogFlusher:
    """Appends a deferred console's lines to the job log every ``interval_s``, on its own
    daemon thread: a worker killed mid-epoch loses at most that much of its log, and a
    hung Drive write stalls only this thread (each call has the storage's timeout).

    Args:
        console: the console whose lines wait (:attr:`Console.deferred`).
        interval_s: the period.
    """

    def __init__(self, console: Console, interval_s: float = FLUSH_EVERY_S) -> None:
        self.console = console
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="colabrun-log", daemon=True)

    def __enter__(self) -> LogFlusher:
        self.console.deferred = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5.0)
        self.console.deferred = False
        self.console.flush_log()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.console.flush_log()
