"""Messages to the person watching: printed, flushed, and kept in the job log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from jobs.errors import StorageError
from state.storage import Storage

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

    def attach_log(self, job_dir: Path) -> None:
        """Start keeping lines in ``job_dir/log/colabrun.log``."""
        self.log_path = job_dir / LOG_DIR / LOG_NAME

    def info(self, message: str) -> None:
        """A plain line."""
        self._emit(f"colabrun: {message}")

    def warn(self, message: str) -> None:
        """A line the user should not miss."""
        self._emit(f"colabrun: WARNING: {message}")

    def _emit(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)
        if self.log_path is None or self.storage is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:  # the log is a convenience: losing a line must not stop training
            self.storage.makedirs(self.log_path.parent)
            self.storage.append_bytes(self.log_path, f"{stamp} {line}\n".encode())
        except StorageError:
            pass
