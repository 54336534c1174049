"""What a start checks before it writes anything: the folders it will write to.

A run that fails half-way through its setup leaves files behind, and may leave the job
``running`` with its lease held. So :func:`check_folders` looks first, writing nothing:
the root and the local staging folder must be folders (or creatable under one), writable,
and not full (docs/troubleshooting.md, "A run that stops before it starts").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from colabrun.jobs.errors import SpecError, StorageError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.commands.report import human_bytes
from colabrun.state.storage import Storage

#: below this much free space nothing useful fits: a start refuses (bytes)
MIN_FREE_BYTES = 1 << 20


@dataclass(frozen=True)
class Look:
    """What the disk says of a folder to be: its nearest existing ancestor, and that one's
    kind, writability and free space."""

    path: Path
    existing: Path
    is_dir: bool
    writable: bool
    free_bytes: int | None


def look(path: Path) -> Look:
    """Look at ``path`` without creating anything."""
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    is_dir = existing.is_dir()
    writable = is_dir and os.access(existing, os.W_OK | os.X_OK)
    try:
        free: int | None = shutil.disk_usage(existing).free if is_dir else None
    except OSError:
        free = None
    return Look(path, existing, is_dir, writable, free)


def problem(seen: Look, *, needed_bytes: int = MIN_FREE_BYTES) -> str | None:
    """Why nothing can be written under ``seen.path``, or ``None``. Pure."""
    if not seen.is_dir:
        kind = "a file" if seen.existing.exists() else "a broken link"
        where = "" if seen.existing == seen.path else f" (in its path {seen.path})"
        return f"{seen.existing} is {kind}, not a folder{where}"
    if not seen.writable:
        return f"{seen.existing} is not writable (a read-only disk, or its permissions)"
    if seen.free_bytes is not None and seen.free_bytes < needed_bytes:
        return (f"{seen.existing} has {human_bytes(seen.free_bytes)} free, and a checkpoint needs "
                f"{human_bytes(needed_bytes)}")
    return None


def check_folders(spec: JobSpec, root: Path, storage: Storage, *,
                  checkpoint_bytes: int = 0) -> None:
    """Refuse a start whose root or local folder cannot take its files; writes nothing.

    Args:
        spec: the job (its ``local_dir``, and its name for the messages).
        root: the folder holding all jobs.
        storage: the root's storage edge: a dead mount fails (or times out) there.
        checkpoint_bytes: the size of the job's newest checkpoint (0 for a new job): both
            folders must have room for one more.

    Raises:
        StorageError: the root cannot take the job's files.
        SpecError: ``local_dir`` cannot.
    """
    needed = max(checkpoint_bytes, MIN_FREE_BYTES)
    found = problem(storage.call("check", root, lambda: look(root)), needed_bytes=needed)
    if found is not None:
        raise StorageError(f"cannot start job {spec.name!r}: the root {root} cannot take its "
                           f"files: {found}; mount the drive, free space, or choose another "
                           "root (--root, or `root:` in the spec)")
    local = Path(spec.local_dir) if spec.local_dir else Path(tempfile.gettempdir())
    found = problem(look(local), needed_bytes=needed)
    if found is not None:
        field = f"local_dir {spec.local_dir!r}" if spec.local_dir else "the temporary folder"
        raise SpecError(f"cannot start job {spec.name!r}: {field} cannot stage its "
                        f"checkpoints: {found}; set local_dir to a writable folder on this "
                        "runtime's disk")

