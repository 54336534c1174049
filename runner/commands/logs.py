"""``colabrun logs``: print a job's log (``<job>/log/colabrun.log``), and follow it.

The pure core is a :class:`Cursor` over the file: :func:`take_lines` splits
the bytes appended since the last read into complete lines, keeping a torn
last line until its end arrives. Following wakes on file events from the
``watchdog`` package: native events on a local disk, the polling observer on
FUSE and network mounts such as Drive, where native events never see writes
made by another runtime (docs/colab.md#drive-pitfalls;
:func:`colabrun.runner.watch.control.needs_polling`).
A periodic re-check backs the events up (and notices the log's folder being
created). Following ends on Ctrl-C, a stop event, or an optional timeout.
"""

from __future__ import annotations

import errno
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from colabrun.jobs.errors import StorageError
from colabrun.runner.display.console import LOG_DIR, LOG_NAME
from colabrun.runner.watch.control import needs_polling
from colabrun.state.storage import Storage

#: most bytes read per wake-up; a larger backlog is read over several
CHUNK_BYTES = 1 << 20

#: after the followed job ended, how long its last lines are waited for (seconds)
END_GRACE_S = 1.0

FollowEnd = Literal["interrupted", "stopped", "timeout"]


def log_path(job_dir: Path) -> Path:
    """Where the job's log lives."""
    return job_dir / LOG_DIR / LOG_NAME


@dataclass(frozen=True)
class Cursor:
    """How far the log was read: the byte offset, and a torn last line held back."""

    offset: int = 0
    partial: bytes = b""


def take_lines(cursor: Cursor, chunk: bytes) -> tuple[list[str], Cursor]:
    """The complete lines in ``chunk`` (read at ``cursor.offset``), and the cursor after it."""
    *complete, rest = (cursor.partial + chunk).split(b"\n")
    lines = [line.decode("utf-8", errors="replace") for line in complete]
    return lines, Cursor(cursor.offset + len(chunk), rest)


def restart_if_shrunk(cursor: Cursor, size: int) -> Cursor:
    """A file shorter than what was read was truncated or replaced: read it from the top."""
    return Cursor() if size < cursor.offset else cursor


def read_new(path: Path, cursor: Cursor, storage: Storage) -> tuple[list[str], Cursor]:
    """The complete lines appended to ``path`` since ``cursor`` (none if it is missing).

    Raises:
        StorageError: the file could not be read.
    """
    lines: list[str] = []
    while True:
        size = storage.size_of(path)
        if size is None:
            return lines, cursor
        cursor = restart_if_shrunk(cursor, size)
        if size == cursor.offset:
            return lines, cursor
        chunk = storage.call("read", path, partial(_read_at, storage, path, cursor.offset))
        if not chunk:
            return lines, cursor
        more, cursor = take_lines(cursor, chunk)
        lines.extend(more)


def _read_at(storage: Storage, path: Path, offset: int) -> bytes:
    with storage.fs.open(path, "rb") as file:
        file.seek(offset)
        return file.read(CHUNK_BYTES)


def print_log(path: Path, *, write: Callable[[str], None], storage: Storage | None = None
              ) -> int:
    """Write every line of the log, a torn last one included; return how many.

    Raises:
        StorageError: the file could not be read.
    """
    lines, cursor = read_new(path, Cursor(), storage or Storage())
    if cursor.partial:
        lines.append(cursor.partial.decode("utf-8", errors="replace"))
    for line in lines:
        write(line)
    return len(lines)


class _Wake(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue[str]) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.inbox.put("changed")


class LogWatcher:
    """Wakes the follower when the log's folder changes (or, until that folder
    exists, the job's folder).

    Args:
        path: the log file.
        polling: force the polling observer (default: chosen by the mount type).
        interval_s: the polling observer's period.
    """

    def __init__(self, path: Path, *, polling: bool | None = None,
                 interval_s: float = 1.0) -> None:
        self.path = path
        self.polling = polling
        self.interval_s = interval_s
        self._inbox: queue.Queue[str] = queue.Queue()
        self._observer: BaseObserver | None = None
        self._watched: Path | None = None

    @property
    def watched(self) -> Path | None:
        """The folder watched now (``None`` before :meth:`start`)."""
        return self._watched

    def start(self) -> None:
        """Start the observer thread (daemon) on the nearest existing folder.

        Raises:
            StorageError: the folder cannot be watched (a lost Drive mount).
        """
        try:
            for _ in range(3):
                folder = self._target()
                self._start_on(folder)
                # The log's folder may have appeared while the watch was set up on
                # the job's: its creation event was then missed, so look again.
                if self._target() == folder:
                    return
                self.stop()
            self._start_on(self._target())
        except OSError as exc:
            self.stop()
            raise StorageError(
                f"cannot watch {self.path.parent} for new log lines ({exc}); on Colab, check "
                "that Drive is still mounted: `ls /content/drive/MyDrive`") from exc

    def _start_on(self, folder: Path) -> None:
        polling = needs_polling(folder) if self.polling is None else self.polling
        observer = PollingObserver(timeout=self.interval_s) if polling else Observer()
        observer.daemon = True
        observer.schedule(_Wake(self._inbox), str(folder), recursive=False)
        observer.start()  # the watch is in place when start() returns
        self._observer, self._watched = observer, folder

    def wait(self, timeout_s: float) -> None:
        """Return at the next change, or after ``timeout_s``."""
        try:
            self._inbox.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            pass
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._follow_folder()

    def stop(self) -> None:
        """Stop and join the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5.0)
            self._observer = None

    def _target(self) -> Path:
        for folder in (self.path.parent, self.path.parent.parent):
            if folder.is_dir():
                return folder
        # Checked here, not left to the observer: watchdog's shared inotify
        # thread outlives a watch that failed to start.
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.path.parent.parent))

    def _follow_folder(self) -> None:
        """Move the watch to the log's folder once the job's first run created it."""
        try:
            target = self._target()
        except OSError:  # the job's folder went away: nothing new will come
            return
        if self._observer is not None and target != self._watched:
            self.stop()
            self.start()


def follow(
    path: Path,
    *,
    write: Callable[[str], None],
    cursor: Cursor | None = None,
    storage: Storage | None = None,
    watcher: LogWatcher | None = None,
    stop: Callable[[], bool] = lambda: False,
    timeout_s: float | None = None,
    recheck_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> FollowEnd:
    """Write the log's lines as they are appended, until told to stop.

    Args:
        path: the log file (it may not exist yet).
        write: receives each complete line, without its newline.
        cursor: where to start (default: the beginning).
        storage: the storage edge.
        watcher: the file-event source (default: a :class:`LogWatcher` on ``path``).
        stop: checked after every wake-up; true ends the follow.
        timeout_s: end after this long (``None``: only Ctrl-C or ``stop`` end it).
        recheck_s: longest wait between reads, should an event be missed.
        clock: monotonic seconds.

    Returns:
        Why it ended: ``interrupted`` (Ctrl-C), ``stopped`` or ``timeout``.
    """
    storage = storage or Storage()
    watcher = watcher or LogWatcher(path)
    cursor = cursor or Cursor()
    ends_at = None if timeout_s is None else clock() + timeout_s
    watcher.start()
    try:
        while True:
            lines, cursor = read_new(path, cursor, storage)
            for line in lines:
                write(line)
            if stop():  # and the lines the job writes right after its state: its summary
                grace_ends = clock() + END_GRACE_S
                while (grace_left := grace_ends - clock()) > 0:
                    watcher.wait(grace_left)
                    lines, cursor = read_new(path, cursor, storage)
                    for line in lines:
                        write(line)
                return "stopped"
            left = None if ends_at is None else ends_at - clock()
            if left is not None and left <= 0:
                return "timeout"
            watcher.wait(recheck_s if left is None else min(recheck_s, left))
    except KeyboardInterrupt:  # Ctrl-C is how a person ends `logs --follow`
        return "interrupted"
    finally:
        watcher.stop()
        if cursor.partial:
            write(cursor.partial.decode("utf-8", errors="replace"))
