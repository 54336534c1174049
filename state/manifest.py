"""The manifest: a checkpoint's commit marker, and how it is read back.

``manifest.json`` is written last into a checkpoint's folder
(:class:`colabrun.state.checkpoints.CheckpointStore`); it lists every file with
its size and digest, so a reader can tell a committed checkpoint from a torn,
truncated or zeroed one (docs/colab.md#drive-pitfalls). Its format carries
``schema_version``; a manifest of a newer colabrun is refused with a message
saying to upgrade.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from colabrun.jobs.errors import CheckpointError
from colabrun.state.digests import hash_list, piece_count
from colabrun.state.model import CheckpointRecord

MANIFEST_NAME = "manifest.json"
PAYLOAD_NAME = "state.pt"
#: 2: a file may be hashed in pieces (``piece_bytes``); version 1 manifests read as ever
MANIFEST_SCHEMA_VERSION = 2


class ManifestFile(BaseModel):
    """One file of a checkpoint, as committed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size_bytes: int
    #: the sha256 of the file, or with ``piece_bytes`` that of its pieces' sha256
    #: digests (:class:`colabrun.state.digests.Digest`), which verification hashes in parallel
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

    @property
    def payload(self) -> ManifestFile:
        """The entry of the payload (:data:`PAYLOAD_NAME`), which every manifest lists."""
        return next(f for f in self.files if f.path == PAYLOAD_NAME)

    def record(self) -> CheckpointRecord:
        """The state file's record of this checkpoint."""
        return CheckpointRecord(
            name=self.name,
            step=self.step,
            epoch=self.epoch,
            batch=self.batch,
            generation=self.generation,
            size_bytes=self.size_bytes,
            sha256=self.payload.sha256,
            created_at=self.created_at,
            metrics=logged_metrics(self.meta),
        )


def logged_metrics(meta: dict[str, Any]) -> dict[str, float]:
    """The metric values a checkpoint's ``meta`` holds (numbers only; none before 0.2)."""
    found = meta.get("metrics")
    if not isinstance(found, dict):
        return {}
    return {str(k): float(v) for k, v in found.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def parse_manifest(name: str, data: bytes) -> Manifest:
    """The manifest of checkpoint ``name`` from the bytes of its ``manifest.json``.

    Args:
        name: the checkpoint's folder name, for messages.
        data: what the file holds.

    Returns:
        The validated manifest.

    Raises:
        CheckpointError: the manifest is torn or invalid, or of a newer colabrun
            (then the message says to upgrade).
    """
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        version = _schema_version(data)
        if version is not None and version > MANIFEST_SCHEMA_VERSION:
            raise CheckpointError(
                f"checkpoint {name}: its manifest has schema_version {version}, this "
                f"colabrun reads up to {MANIFEST_SCHEMA_VERSION}; upgrade colabrun "
                "(install a newer wheel: docs/colab.md, \"Installing colabrun\")") from exc
        raise CheckpointError(f"checkpoint {name}: manifest is torn or invalid") from exc


def _schema_version(data: bytes) -> int | None:
    """The ``schema_version`` of a manifest this colabrun cannot read, if it says one."""
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    return version if isinstance(version, int) else None
