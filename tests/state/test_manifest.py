"""The manifest's format and how it is read back, without a disk: bytes in, a
manifest or a ``CheckpointError`` out."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from colabrun.jobs.errors import CheckpointError
from colabrun.state.digests import hash_list
from colabrun.state.manifest import (
    MANIFEST_SCHEMA_VERSION,
    PAYLOAD_NAME,
    Manifest,
    ManifestFile,
    parse_manifest,
)

PIECES = (hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest())
PAYLOAD = ManifestFile(path=PAYLOAD_NAME, size_bytes=1500,
                       sha256=hash_list(bytes.fromhex(p) for p in PIECES), piece_bytes=1000,
                       pieces=PIECES)


def manifest(*files: ManifestFile) -> Manifest:
    return Manifest(name="step-000000010-g0001", step=10, epoch=1, batch=0, generation=1,
                    created_at=5.0, files=files or (PAYLOAD,), meta={"k": "v"})


def test_a_manifest_reads_back_as_written_and_records_its_payload() -> None:
    extra = ManifestFile(path="extra.json", size_bytes=3, sha256="0" * 64)
    written = manifest(extra, PAYLOAD)
    read = parse_manifest(written.name, written.model_dump_json(indent=2).encode())
    assert read == written and read.schema_version == MANIFEST_SCHEMA_VERSION
    assert read.payload == PAYLOAD
    assert read.size_bytes == 1503
    record = read.record()
    assert (record.name, record.sha256, record.size_bytes) == (written.name, PAYLOAD.sha256,
                                                               1503)


@pytest.mark.parametrize("data", [b"", b'{"name": "step-', b"[]",
                                  b'{"schema_version": 2, "name": "x"}'])
def test_a_torn_or_invalid_manifest_is_a_checkpoint_error(data: bytes) -> None:
    with pytest.raises(CheckpointError, match="checkpoint x: manifest is torn or invalid"):
        parse_manifest("x", data)


def test_a_manifest_of_a_newer_colabrun_asks_for_an_upgrade() -> None:
    raw = json.loads(manifest().model_dump_json())
    raw["schema_version"] = MANIFEST_SCHEMA_VERSION + 1
    raw["signed_by"] = "a field this colabrun does not know"
    with pytest.raises(CheckpointError, match="upgrade colabrun .install a newer wheel"):
        parse_manifest("x", json.dumps(raw).encode())


@pytest.mark.parametrize("change", [
    {"pieces": PIECES[:1]},  # do not cover the file
    {"pieces": (PIECES[1], PIECES[0])},  # do not hash to its digest
    {"piece_bytes": None},  # pieces without piece_bytes
])
def test_pieces_must_add_up(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ManifestFile.model_validate({**PAYLOAD.model_dump(), **change})


def test_a_manifest_must_list_the_payload() -> None:
    with pytest.raises(ValidationError, match=f"must list {PAYLOAD_NAME}"):
        manifest(ManifestFile(path="other.pt", size_bytes=1, sha256="0" * 64))


def test_a_record_keeps_the_numeric_metrics_of_its_manifest() -> None:
    from colabrun.state.manifest import logged_metrics

    meta = {"metrics": {"loss": 0.5, "acc": 1, "flag": True, "bad": float("nan"), "s": "x"}}
    assert logged_metrics(meta) == {"loss": 0.5, "acc": 1.0}
    assert logged_metrics({}) == {} and logged_metrics({"metrics": [1]}) == {}  # before 0.2
