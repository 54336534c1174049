"""The checkpoint store: the commit protocol, verification, loading, rotation.

Layout under the job folder::

    checkpoints/
      step-000000450-g0002/      one folder per checkpoint, never overwritten
        state.pt                 the tensors (torch.save; loaded weights_only)
        manifest.json            written LAST: the commit marker
      .tmp-step-...-1a2b3c/      a save in progress; readers ignore it

A save (:meth:`CheckpointStore.commit`) writes the payload into a fresh
temporary folder, fsyncs it while hashing it, checks its size on disk
(:mod:`colabrun.state.checkpoint_files`), writes
the manifest (sizes and digests of every file, :mod:`colabrun.state.manifest`),
fsyncs, and renames the folder into place. Readers trust only folders with a
manifest whose files verify; a torn, truncated, zero-byte or missing one is
skipped (docs/colab.md#drive-pitfalls). The named points of :data:`SAVE_POINTS`
are reported to ``on_point`` so fault injection can kill the process at each of them.
"""

from __future__ import annotations

import errno
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from colabrun.jobs.errors import CheckpointError, StorageError
from colabrun.state.checkpoint_files import copy_file, write_payload
from colabrun.state.digests import HASH_PIECE_BYTES
from colabrun.state.hooks import Hook, no_hook
from colabrun.state.manifest import (
    MANIFEST_NAME,
    PAYLOAD_NAME,
    Manifest,
    ManifestFile,
    parse_manifest,
)
from colabrun.state.payload import load_errors_told, load_tensors
from colabrun.state.storage import Storage
from colabrun.state.verified import PieceMismatch, SizeMismatch

if TYPE_CHECKING:  # imported where tensors are saved or loaded: `colabrun status` needs none
    import torch

CHECKPOINTS_DIR = "checkpoints"

#: Named points of one save, in order; fault injection kills at each of them.
SAVE_POINTS = (
    "save.folder_created",
    "save.payload_writing",
    "save.payload_written",
    "save.manifest_written",
    "save.renamed",
)
#: Named points of rotation, in order.
ROTATE_POINTS = ("rotate.manifest_removed",)

_NAME = re.compile(r"^step-(\d{9,})-g(\d{4,})(?:-r(\d+))?$")

#: writes a checkpoint's files into its temporary folder; the manifest naming them
FileWriter = Callable[[Path, str], Manifest]


def checkpoint_name(step: int, generation: int, retry: int = 0) -> str:
    """``step-000000450-g0002`` (``-r1``... when that name is taken).

    Args:
        step: the optimizer step saved.
        generation: the lease generation of the runner that saved it.
        retry: how many checkpoints of that step and generation came before.

    Returns:
        The checkpoint's folder name.
    """
    base = f"step-{step:09d}-g{generation:04d}"
    return f"{base}-r{retry}" if retry else base


def parse_checkpoint_name(name: str) -> tuple[int, int, int] | None:
    """``(step, generation, retry)`` of a checkpoint folder name, or ``None``.

    Args:
        name: a folder name found by listing (temporaries and junk included).

    Returns:
        The three numbers of a checkpoint's name; ``None`` for any other name.
    """
    match = _NAME.match(name)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def free_name(taken: Collection[str], step: int, generation: int) -> str:
    """The name a new checkpoint of ``step`` and ``generation`` gets.

    Args:
        taken: the names already in the folder.
        step: the optimizer step saved.
        generation: the lease generation of the runner that saves it.

    Returns:
        :func:`checkpoint_name` with the first retry number not taken.
    """
    retry = 0
    while checkpoint_name(step, generation, retry) in taken:
        retry += 1
    return checkpoint_name(step, generation, retry)


def _size_error(name: str, file: ManifestFile, size: int | None) -> CheckpointError:
    """A file of checkpoint ``name`` is ``size`` bytes (``None``: missing), not as committed."""
    if size is None:
        return CheckpointError(f"checkpoint {name}: {file.path} is missing")
    return CheckpointError(
        f"checkpoint {name}: {file.path} is {size} bytes, the manifest says "
        f"{file.size_bytes} (a write that never fully reached the storage)")


class CheckpointStore:
    """Checkpoints of one job, committed and read through the storage edge.

    Args:
        job_dir: the job's folder.
        storage: the storage edge.
        on_point: called with each name of :data:`SAVE_POINTS`/:data:`ROTATE_POINTS`.
    """

    def __init__(self, job_dir: Path, storage: Storage, *, on_point: Hook = no_hook) -> None:
        self.dir = job_dir / CHECKPOINTS_DIR
        self.storage = storage
        self.on_point = on_point

    # -- writing ------------------------------------------------------------------

    def commit(self, payload: Mapping[str, Any], *, step: int, epoch: int, batch: int,
               generation: int, created_at: float, meta: Mapping[str, Any],
               expected_bytes: int = 0) -> Manifest:
        """Write ``payload`` as a new checkpoint and commit it; return its manifest.

        Raises:
            StorageError: the root failed even after retries (nothing is committed).
        """

        def write(tmp: Path, name: str) -> Manifest:
            file = write_payload(self.storage, tmp, payload, expected_bytes=expected_bytes,
                                 on_first_write=self._writing, piece_bytes=HASH_PIECE_BYTES)
            return Manifest(name=name, step=step, epoch=epoch, batch=batch,
                            generation=generation, created_at=created_at, meta=dict(meta),
                            files=(file,))

        return self._commit(step, generation, write)

    def upload_from(self, source: CheckpointStore, name: str, *, verify_source: bool = True
                    ) -> Manifest:
        """Copy a committed checkpoint of ``source`` here, with the same commit protocol.

        Each file is copied into a temporary folder (the source checked against its
        manifest meanwhile, unless ``verify_source`` is off), then fsynced; the manifest
        goes last, then the rename. The copy may get another name if that one is taken.

        Args:
            verify_source: check the source against its manifest while copying. A
                checkpoint this process wrote moments ago was hashed as it was written
                and is still in the page cache: checking it again reads and hashes
                every byte once more (half a second of CPU per GB), to learn nothing.
                One left by an earlier process (or boot) is always checked.

        Raises:
            CheckpointError: the source does not verify.
            StorageError: this store failed, even after retries (nothing committed).
        """
        original = source.read_manifest(name)

        def write(tmp: Path, final: str) -> Manifest:
            for file in original.files:
                verify = partial(source._verify_file, name, file) if verify_source else None
                copy_file(self.storage, source.dir / name / file.path, tmp / file.path, file,
                          name=name, src_fs=source.storage.fs, verify=verify,
                          on_first_write=self._writing)
            return original.model_copy(update={"name": final})

        return self._commit(original.step, original.generation, write)

    def _commit(self, step: int, generation: int, write: FileWriter) -> Manifest:
        """The commit protocol, passing :data:`SAVE_POINTS` in order: a fresh temporary
        folder, ``write(tmp, name)`` fills it (``save.payload_writing`` is its to pass),
        the manifest it returns goes in last, fsynced, then the rename into place."""
        self.storage.makedirs(self.dir)
        name = free_name(set(self.storage.listdir(self.dir)), step, generation)
        tmp = self.dir / f".tmp-{name}-{uuid.uuid4().hex[:6]}"
        self.storage.makedirs(tmp)
        self.on_point("save.folder_created")
        manifest = write(tmp, name)
        self.on_point("save.payload_written")
        self.storage.write_bytes(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
        self.storage.fsync_dir(tmp)
        self.on_point("save.manifest_written")
        self.storage.replace(tmp, self.dir / name)
        self.storage.fsync_dir(self.dir)
        self.on_point("save.renamed")
        return manifest

    def _writing(self) -> None:
        """The first bytes of a checkpoint's file reached its temporary folder."""
        self.on_point("save.payload_writing")

    # -- reading ------------------------------------------------------------------

    def list_names(self) -> list[str]:
        """Checkpoint folder names found by listing (which may be stale on Drive)."""
        return [n for n in self.storage.listdir(self.dir) if parse_checkpoint_name(n)]

    def verify(self, name: str) -> Manifest:
        """Read the manifest and check every file's size and digest.

        Raises:
            CheckpointError: missing folder or manifest, unreadable manifest, or a
                file that is missing, of the wrong size, or of the wrong hash.
        """
        manifest = self.read_manifest(name)
        for file in manifest.files:
            self._verify_file(name, file)
        return manifest

    def _verify_file(self, name: str, file: ManifestFile,
                     consume: Callable[[IO[bytes]], Any] = lambda f: None) -> Any:
        """Check one file of checkpoint ``name``; with pieces, ``consume(file)`` reads it
        meanwhile, only its verified bytes (:meth:`Storage.read_verified`), and what it
        returns is returned. A whole-file sha256 (the first format) is checked first,
        then ``consume`` is not called."""
        path = self.dir / name / file.path
        if file.pieces is None or file.piece_bytes is None:
            self._check_size(name, file)
            if self.storage.sha256_of(path, expected_bytes=file.size_bytes).sha256 != file.sha256:
                raise CheckpointError(f"checkpoint {name}: {file.path} fails its sha256 check")
            return None
        try:
            return self.storage.read_verified(
                path, consume, size=file.size_bytes, piece_bytes=file.piece_bytes,
                pieces=file.pieces, first=(0, len(file.pieces) - 1))
        except PieceMismatch as exc:
            raise CheckpointError(
                f"checkpoint {name}: {file.path} fails its sha256 check ({exc})") from None
        except SizeMismatch as exc:
            raise _size_error(name, file, exc.actual) from None
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise _size_error(name, file, None) from None

    def _check_size(self, name: str, file: ManifestFile) -> None:
        size = self.storage.size_of(self.dir / name / file.path)
        if size != file.size_bytes:
            raise _size_error(name, file, size)

    def check_size(self, name: str) -> str:
        """A cheap check (sizes only, no hashing): ``size ok``, or what is wrong."""
        try:
            manifest = self.read_manifest(name)
        except CheckpointError:
            return "NO MANIFEST"
        for file in manifest.files:
            size = self.storage.size_of(self.dir / name / file.path)
            if size != file.size_bytes:
                return "MISSING" if size is None else f"TRUNCATED ({size} of {file.size_bytes} B)"
        return "size ok"

    def read_manifest(self, name: str) -> Manifest:
        """The manifest of ``name``, or :class:`CheckpointError` if it is not committed."""
        path = self.dir / name / MANIFEST_NAME
        try:
            data = self.storage.read_bytes(path)  # one round trip: Drive's cost a lot
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise CheckpointError(
                f"checkpoint {name}: no manifest (never committed, or lost)") from None
        return parse_manifest(name, data)

    def load_verified(self, name: str, *, map_location: str | torch.device = "cpu"
                      ) -> tuple[Manifest, Any]:
        """Verify a checkpoint and load its payload, the two overlapped: ``torch.load``
        reads each piece of ``state.pt`` once it matched its digest (pieces are hashed
        on every CPU), so no unverified byte is ever deserialised. A checkpoint of the
        first manifest format is verified whole, then loaded.

        Raises:
            CheckpointError: as :meth:`verify` and :meth:`load_payload`.
        """
        manifest = self.read_manifest(name)
        payload = manifest.payload
        for file in manifest.files:
            if file is not payload:
                self._verify_file(name, file)
        if payload.pieces is None:
            self._verify_file(name, payload)
            return manifest, self.load_payload(name, map_location=map_location)
        with load_errors_told(name):
            consume = partial(load_tensors, map_location=map_location)
            return manifest, self._verify_file(name, payload, consume)

    def load_payload(self, name: str, *, map_location: str | torch.device = "cpu") -> Any:
        """Load a verified checkpoint's tensors with ``torch.load(weights_only=True)``.

        Raises:
            CheckpointError: the payload does not deserialise (e.g. a newer
                torch format, docs/troubleshooting.md#skipped-checkpoints-warnings), or
                holds objects ``weights_only`` refuses.
        """
        path = self.dir / name / PAYLOAD_NAME

        def attempt() -> Any:
            with self.storage.fs.open(path, "rb") as f:
                return load_tensors(f, map_location)

        with load_errors_told(name):
            return self.storage.call("read", path, attempt)

    # -- deleting -----------------------------------------------------------------

    def discard(self, name: str) -> None:
        """Un-commit (manifest first), truncate and delete one checkpoint."""
        folder = self.dir / name
        self.storage.discard_file(folder / MANIFEST_NAME)
        self.on_point("rotate.manifest_removed")
        self.storage.discard_tree(folder)

    def discard_uncommitted(self) -> list[str]:
        """Delete temporary folders left by saves that never committed; return their names."""
        leftovers = [n for n in self.storage.listdir(self.dir) if n.startswith(".tmp-")]
        for name in leftovers:
            self.storage.discard_tree(self.dir / name)
        return leftovers
