"""Control requests: files dropped into a job's ``control/`` folder.

``colabrun stop NAME`` writes ``control/stop`` (save, then stop);
``colabrun checkpoint NAME`` writes ``control/checkpoint`` (save now, go on).
A person can create the same files by hand, from Drive's web page or another
runtime. The supervisor watches the folder with the ``watchdog`` package:
native events on a local disk, its polling observer on FUSE and network
mounts such as Drive, where native events never see remote changes
(docs/concepts.md#the-lease). Each request is acted on, then removed; an unknown file
is reported once and left alone.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from colabrun.runner import knobs
from colabrun.state.storage import Storage

CONTROL_DIR = "control"
REQUESTS = ("stop", "checkpoint")
NETWORK_FS_PREFIXES = ("fuse", "nfs", "cifs", "smb", "9p", "sshfs", "afs", "ceph", "gcsfuse")


def request(job_dir: Path, kind: str, storage: Storage | None = None) -> Path:
    """Drop a request file (atomically) into ``job_dir/control/``; return its path."""
    if kind not in REQUESTS:
        raise ValueError(f"unknown request {kind!r}; known: {', '.join(REQUESTS)}")
    storage = storage or Storage()
    folder = job_dir / CONTROL_DIR
    storage.makedirs(folder)
    tmp = folder / f".{kind}.tmp"
    storage.write_bytes(tmp, b"requested by colabrun\n")
    storage.replace(tmp, folder / kind)
    return folder / kind


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or ``""``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[2]
    return kind


def needs_polling(path: Path) -> bool:
    """Whether native file events cannot be trusted at ``path`` (FUSE, network mounts)."""
    if knobs.control_polling():
        return True
    return filesystem_type(path).startswith(NETWORK_FS_PREFIXES)


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue[str]) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.inbox.put("changed")


class ControlWatcher:
    """Watches ``control/`` and hands out the requests found there.

    Args:
        job_dir: the job's folder.
        storage: the storage edge (listing, removing requests).
        polling: force the polling observer (default: chosen by the mount type).
        interval_s: the polling observer's period.
    """

    def __init__(self, job_dir: Path, storage: Storage, *, polling: bool | None = None,
                 interval_s: float = 1.0) -> None:
        self.folder = job_dir / CONTROL_DIR
        self.storage = storage
        self.polling = needs_polling(job_dir) if polling is None else polling
        self.interval_s = interval_s
        self._inbox: queue.Queue[str] = queue.Queue()
        self._observer: BaseObserver | None = None
        self._reported: set[str] = set()

    def start(self) -> tuple[list[str], list[str]]:
        """Start watching; return (and remove) stale requests left from before, and
        the unknown files there (reported once)."""
        self.storage.makedirs(self.folder)
        stale = self._take_all()
        observer = PollingObserver(timeout=self.interval_s) if self.polling else Observer()
        observer.schedule(_Handler(self._inbox), str(self.folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        return stale

    def stop(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5.0)
            self._observer = None

    def pending(self) -> tuple[list[str], list[str]]:
        """``(requests, unknown files)`` that arrived since the last call."""
        changed = False
        while not self._inbox.empty():
            self._inbox.get_nowait()
            changed = True
        return self._take_all() if changed else ([], [])

    def _take_all(self) -> tuple[list[str], list[str]]:
        found, unknown = [], []
        for name in sorted(self.storage.listdir(self.folder)):
            if name.startswith("."):
                continue
            if name in REQUESTS:
                self.storage.discard_file(self.folder / name)
                found.append(name)
            elif name not in self._reported:
                self._reported.add(name)
                unknown.append(name)
        return found, unknown
