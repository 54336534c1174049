"""The checkpoint store: the commit protocol, verification, loading, rotation.

Layout under the job folder::

    checkpoints/
      step-000000450-g0002/      one folder per checkpoint, never overwritten
        state.pt                 the tensors (torch.save; loaded weights_only)
        manifest.json            written LAST: the commit marker
      .tmp-step-...-1a2b3c/      a save in progress; readers ignore it

A save (:meth:`CheckpointStore.commit`) writes the payload into a fresh
temporary folder, fsyncs it while hashing it, checks its size on disk, writes
the manifest (sizes and digests of every file), fsyncs, and renames the folder
into place. Readers trust only folders with a manifest whose files verify; a
torn, truncated, zero-byte or missing one is skipped (docs/colab.md#drive-pitfalls).
The named points of :data:`SAVE_POINTS` are reported to ``on_point`` so fault
injection can kill the process at each of them.
"""

from __future__ import annotations

import errno
import json
import pickle
import re
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from colabrun.jobs.errors import CheckpointError, StorageError
from colabrun.state.hooks import Hook, no_hook
from colabrun.state.model import CheckpointRecord
from colabrun.state.storage import (
    HASH_PIECE_BYTES,
    PieceMismatch,
    SizeMismatch,
    Storage,
    hash_list,
    piece_count,
)

if TYPE_CHECKING:  # imported where tensors are saved or loaded: `colabrun status` needs none
    import torch

CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "manifest.json"
PAYLOAD_NAME = "state.pt"
#: 2: a file may be hashed in pieces (``piece_bytes``); version 1 manifests read as ever
MANIFEST_SCHEMA_VERSION = 2

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


class ManifestFile(BaseModel):
    """One file of a checkpoint, as committed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size_bytes: int
    #: the sha256 of the file, or with ``piece_bytes`` that of its pieces' sha256
    #: digests (:class:`colabrun.state.storage.Digest`), which verification hashes in parallel
    sha256: str
    piece_bytes: int | None = None
    #: the digest of each piece, hex (with ``piece_bytes``): a resume reads each
    #: piece once it matched, while the next ones are hashed
    pieces: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _pieces_add_up(self) -> ManifestFile:
        if self.piece_bytes is None:
            if self.pieces is not None:
                raise ValueError("pieces without piece_bytes")
            return self
        if self.pieces is None or len(self.pieces) != piece_count(self.size_bytes,
                                                                  self.piece_bytes):
            raise ValueError("the pieces do not cover the file")
        if hash_list(bytes.fromhex(p) for p in self.pieces) != self.sha256:
            raise ValueError("the pieces do not hash to the file's digest")
        return self


class Manifest(BaseModel):
    """A checkpoint's commit marker: what it holds and how to verify it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    step: int
    epoch: int
    batch: int
    generation: int
    created_at: float
    files: tuple[ManifestFile, ...]
    meta: dict[str, Any]

    @field_validator("files")
    @classmethod
    def _has_payload(cls, files: tuple[ManifestFile, ...]) -> tuple[ManifestFile, ...]:
        if not any(f.path == PAYLOAD_NAME for f in files):
            raise ValueError(f"a manifest must list {PAYLOAD_NAME}")
        return files

    @property
    def size_bytes(self) -> int:
        """Total bytes of the checkpoint's files."""
        return sum(f.size_bytes for f in self.files)

    def record(self) -> CheckpointRecord:
        """The state file's record of this checkpoint."""
        payload = next(f for f in self.files if f.path == PAYLOAD_NAME)
        return CheckpointRecord(
            name=self.name,
            step=self.step,
            epoch=self.epoch,
            batch=self.batch,
            generation=self.generation,
            size_bytes=self.size_bytes,
            sha256=payload.sha256,
            created_at=self.created_at,
        )


def _schema_version(data: bytes) -> int | None:
    """The ``schema_version`` of a manifest this colabrun cannot read, if it says one."""
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    return version if isinstance(version, int) else None


def _size_error(name: str, file: ManifestFile, size: int | None) -> CheckpointError:
    """A file of checkpoint ``name`` is ``size`` bytes (``None``: missing), not as committed."""
    if size is None:
        return CheckpointError(f"checkpoint {name}: {file.path} is missing")
    return CheckpointError(
        f"checkpoint {name}: {file.path} is {size} bytes, the manifest says "
        f"{file.size_bytes} (a write that never fully reached the storage)")


def checkpoint_name(step: int, generation: int, retry: int = 0) -> str:
    """``step-000000450-g0002`` (``-r1``... when that name is taken)."""
    base = f"step-{step:09d}-g{generation:04d}"
    return f"{base}-r{retry}" if retry else base


def parse_checkpoint_name(name: str) -> tuple[int, int, int] | None:
    """``(step, generation, retry)`` of a checkpoint folder name, or ``None``."""
    match = _NAME.match(name)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


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

    def commit(
        self,
        payload: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        batch: int,
        generation: int,
        created_at: float,
        meta: Mapping[str, Any],
        expected_bytes: int = 0,
    ) -> Manifest:
        """Write ``payload`` as a new checkpoint and commit it; return its manifest.

        Raises:
            StorageError: the root failed even after retries (nothing is committed).
        """
        import torch

        self.storage.makedirs(self.dir)
        name = self._free_name(step, generation)
        tmp = self.dir / f".tmp-{name}-{uuid.uuid4().hex[:6]}"
        self.storage.makedirs(tmp)
        self.on_point("save.folder_created")
        written = self.storage.write_stream(
            tmp / PAYLOAD_NAME, lambda f: torch.save(dict(payload), f),
            expected_bytes=expected_bytes,
            on_first_write=lambda: self.on_point("save.payload_writing"),
            piece_bytes=HASH_PIECE_BYTES,
        )
        on_disk = self.storage.size_of(tmp / PAYLOAD_NAME)
        if on_disk != written.size_bytes:
            raise StorageError(
                f"{tmp / PAYLOAD_NAME}: wrote {written.size_bytes} bytes but {on_disk} are on "
                "disk; the storage lost data (is the disk full?)"
            )
        self.on_point("save.payload_written")
        manifest = Manifest(
            name=name, step=step, epoch=epoch, batch=batch, generation=generation,
            created_at=created_at, meta=dict(meta),
            files=(ManifestFile(path=PAYLOAD_NAME, size_bytes=written.size_bytes,
                                sha256=written.sha256, piece_bytes=HASH_PIECE_BYTES,
                                pieces=written.pieces),),
        )
        self.storage.write_bytes(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
        self.storage.fsync_dir(tmp)
        self.on_point("save.manifest_written")
        self.storage.replace(tmp, self.dir / name)
        self.storage.fsync_dir(self.dir)
        self.on_point("save.renamed")
        return manifest

    def upload_from(self, source: CheckpointStore, name: str) -> Manifest:
        """Copy a committed checkpoint of ``source`` here, with the same commit protocol.

        Each file is copied into a temporary folder while the source is verified
        against its manifest, then fsynced; the manifest goes last, then the
        rename. The copy may get another name if that one is taken here.

        Raises:
            CheckpointError: the source does not verify.
            StorageError: this store failed, even after retries (nothing committed).
        """
        original = source.read_manifest(name)
        self.storage.makedirs(self.dir)
        final = self._free_name(original.step, original.generation)
        tmp = self.dir / f".tmp-{final}-{uuid.uuid4().hex[:6]}"
        self.storage.makedirs(tmp)
        self.on_point("save.folder_created")
        for file in original.files:
            self._copy_file(source, name, file, tmp)
        self.on_point("save.payload_written")
        manifest = original.model_copy(update={"name": final})
        self.storage.write_bytes(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
        self.storage.fsync_dir(tmp)
        self.on_point("save.manifest_written")
        self.storage.replace(tmp, self.dir / final)
        self.storage.fsync_dir(self.dir)
        self.on_point("save.renamed")
        return manifest

    def _copy_file(self, source: CheckpointStore, name: str, file: ManifestFile, tmp: Path
                   ) -> None:
        """Copy one file in the kernel while the source is verified against its manifest
        on the other CPUs. Both read the same pages of a file written moments ago,
        which a local commit never changes: the copy's bytes are the verified ones.
        (A copy that still differs, say a mount that loses data, fails the
        verification that comes before a resume, as any damaged checkpoint does.)"""
        target = tmp / file.path

        def verify_source() -> None:
            with source.storage.counting_cpu():  # the upload's cost (Storage.io_cpu_s)
                source._verify_file(name, file)

        with ThreadPoolExecutor(1, thread_name_prefix="colabrun-verify") as pool:
            checked = pool.submit(verify_source)
            try:
                copied = self.storage.copy_file(
                    source.dir / name / file.path, target, expected_bytes=file.size_bytes,
                    on_first_write=lambda: self.on_point("save.payload_writing"),
                    src_fs=source.storage.fs)  # the root's faults stay off the local disk
            finally:
                source_error = checked.exception()
        if source_error is not None:  # the source is at fault, not this store
            raise source_error
        on_disk = self.storage.size_of(target)
        if copied != file.size_bytes or on_disk != file.size_bytes:
            raise StorageError(
                f"{target}: the copy does not match checkpoint {name} "
                f"({on_disk} bytes on disk, {file.size_bytes} expected); the storage lost data"
            )

    def _free_name(self, step: int, generation: int) -> str:
        taken = set(self.storage.listdir(self.dir))
        retry = 0
        while checkpoint_name(step, generation, retry) in taken:
            retry += 1
        return checkpoint_name(step, generation, retry)

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
        try:
            return Manifest.model_validate_json(data)
        except ValidationError as exc:
            version = _schema_version(data)
            if version is not None and version > MANIFEST_SCHEMA_VERSION:
                raise CheckpointError(
                    f"checkpoint {name}: its manifest has schema_version {version}, this "
                    f"colabrun reads up to {MANIFEST_SCHEMA_VERSION}; upgrade colabrun "
                    "(pip install -U colabrun)") from exc
            raise CheckpointError(f"checkpoint {name}: manifest is torn or invalid") from exc

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
        payload = next(f for f in manifest.files if f.path == PAYLOAD_NAME)
        for file in manifest.files:
            if file is not payload:
                self._verify_file(name, file)
        if payload.pieces is None:
            self._verify_file(name, payload)
            return manifest, self.load_payload(name, map_location=map_location)

        def consume(file: Any) -> Any:
            import torch

            return torch.load(file, map_location=map_location, weights_only=True)

        try:
            return manifest, self._verify_file(name, payload, consume)
        except CheckpointError:  # a ValueError too: not the payload's loading error
            raise
        except Exception as exc:
            if (error := self._payload_error(name, exc)) is None:
                raise
            raise error from exc

    def _check_size(self, name: str, file: ManifestFile) -> None:
        size = self.storage.size_of(self.dir / name / file.path)
        if size != file.size_bytes:
            raise _size_error(name, file, size)

    @staticmethod
    def _payload_error(name: str, exc: Exception) -> CheckpointError | None:
        """A loading failure the payload itself is at fault for, as a checkpoint
        error; ``None`` for any other (the storage failed)."""
        if isinstance(exc, pickle.UnpicklingError):  # weights_only refused an object
            return CheckpointError(
                f"checkpoint {name}: {PAYLOAD_NAME} holds objects other than tensors and plain "
                "data; refused, since loading it could run arbitrary code")
        if isinstance(exc, (RuntimeError, ValueError, EOFError)):  # torch's unpickling errors
            return CheckpointError(f"checkpoint {name}: cannot load {PAYLOAD_NAME}: {exc}")
        return None

    def load_payload(self, name: str, *, map_location: str | torch.device = "cpu") -> Any:
        """Load a verified checkpoint's tensors with ``torch.load(weights_only=True)``.

        Raises:
            CheckpointError: the payload does not deserialise (e.g. a newer
                torch format, docs/troubleshooting.md#skipped-checkpoints-warnings), or
                holds objects ``weights_only`` refuses.
        """
        path = self.dir / name / PAYLOAD_NAME

        def attempt() -> Any:
            import torch

            with self.storage.fs.open(path, "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=True)

        try:
            return self.storage.call("read", path, attempt)
        except Exception as exc:
            if (error := self._payload_error(name, exc)) is None:
                raise
            raise error from exc

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
