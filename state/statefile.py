"""``state.json``: read, and written atomically under a lock.

A write goes to a fresh temporary name beside the file, is fsynced, then
``os.replace``\\ d over it, and the folder is fsynced: a reader sees the old
state or the new one, never half of each. The lock (filelock) serialises
writers on one machine; across runtimes the lease does (docs/concepts.md#the-lease).

A state file that does not parse is never silently replaced: reading raises
:class:`StateCorrupt`, and :func:`quarantine` moves it aside only when the user
asks for a rebuild.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import ValidationError

from colabrun.jobs.errors import StateCorrupt, StorageError
from colabrun.state.hooks import Hook, no_hook
from colabrun.state.model import SCHEMA_VERSION, JobState
from colabrun.state.storage import Storage

STATE_NAME = "state.json"

#: Named points of a state write, in order; fault injection kills at them.
STATE_WRITE_POINTS = ("state.tmp_written", "state.replaced")


class StateFile:
    """The state file of one job folder.

    Args:
        job_dir: the job's folder.
        storage: the storage edge.
        on_point: called with each name of :data:`STATE_WRITE_POINTS` as the write passes it.
        lock_timeout_s: how long to wait for another writer on this machine.
    """

    def __init__(
        self,
        job_dir: Path,
        storage: Storage,
        *,
        on_point: Hook = no_hook,
        lock_timeout_s: float = 60.0,
    ) -> None:
        self.path = job_dir / STATE_NAME
        self.storage = storage
        self.on_point = on_point
        self._lock = FileLock(str(job_dir / f"{STATE_NAME}.lock"), timeout=lock_timeout_s)

    def exists(self) -> bool:
        """Whether a state file is present."""
        return self.storage.size_of(self.path) is not None

    def read(self) -> JobState | None:
        """The state, or ``None`` when there is no state file yet.

        Raises:
            StateCorrupt: the file exists but is not a valid state.
        """
        if not self.exists():
            return None
        return parse_state(self.storage.read_bytes(self.path), where=self.path)

    def write(self, state: JobState) -> None:
        """Replace the state atomically (temporary file, fsync, rename, folder fsync)."""
        with self._locked():
            self._write_unlocked(state)

    def update(self, change: Callable[[JobState], JobState], *,
               initial: JobState | None = None) -> JobState:
        """Read, apply ``change``, write, all under the lock; return the new state.

        Args:
            change: the pure transition to apply.
            initial: the state to apply it to when there is no file yet (a job's first
                session creates its state in the same write that takes its lease).

        Raises:
            StateCorrupt: the current file does not parse.
            StorageError: there is no state file to update, and no ``initial``.
        """
        with self._locked():
            current = self.read() or initial
            if current is None:
                raise StorageError(f"{self.path} vanished while the job was running")
            new = change(current)
            self._write_unlocked(new)
            return new

    def _write_unlocked(self, state: JobState) -> None:
        data = (state.model_dump_json(indent=2) + "\n").encode()
        tmp = self.path.with_name(f".{STATE_NAME}.{uuid.uuid4().hex[:8]}.tmp")
        self.storage.write_bytes(tmp, data)
        self.on_point("state.tmp_written")
        self.storage.replace(tmp, self.path)
        self.storage.fsync_dir(self.path.parent)
        self.on_point("state.replaced")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except LockTimeout as exc:
            raise StorageError(
                f"{self._lock.lock_file} is held by another process on this machine; "
                "is another colabrun running this job? (`colabrun status`)"
            ) from exc
        try:
            yield
        finally:
            self._lock.release()

    def quarantine(self) -> Path | None:
        """Move a (corrupt) state file aside, keeping it for inspection; return where."""
        if not self.exists():
            return None
        aside = self.path.with_name(f"{STATE_NAME}.corrupt-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.storage.replace(self.path, aside)
        return aside

    def discard_stale_temporaries(self) -> None:
        """Delete temporary state files a crash left behind."""
        for name in self.storage.listdir(self.path.parent):
            if name.startswith(f".{STATE_NAME}.") and name.endswith(".tmp"):
                self.storage.discard_file(self.path.parent / name)


def parse_state(data: bytes, *, where: Path) -> JobState:
    """Parse state bytes, or raise :class:`StateCorrupt` saying how to recover."""
    fix = (f"inspect it, or rebuild it from the committed checkpoints with "
           f"`colabrun repair {where.parent.name} --root {where.parent.parent}`")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateCorrupt(f"{where} is corrupt (not JSON: {exc}); {fix}") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise StateCorrupt(
            f"{where} has schema_version {version!r}, this colabrun reads {SCHEMA_VERSION}; "
            f"upgrade colabrun, or {fix}"
        )
    try:
        return JobState.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise StateCorrupt(f"{where} is corrupt ({field}: {first['msg']}); {fix}") from exc
