"""A checkpoint's files on a real ``tmp_path``: the payload written with its digests, a copy
from another store checked meanwhile, and each checked on disk against what was written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from colabrun.jobs.errors import CheckpointError, StorageError
from colabrun.state.checkpoint_files import copy_file, write_payload
from colabrun.state.digests import HASH_PIECE_BYTES
from colabrun.state.filesystem import OsFs
from colabrun.state.manifest import PAYLOAD_NAME, ManifestFile
from colabrun.state.payload import load_tensors
from tests.state.test_storage import FailingFs, hash_list_of, storage_with


class LosingFs(FailingFs):
    """A disk that lost the last byte of every file, as a full or failing one may."""

    def stat_size(self, path: Path) -> int:
        return max(0, super().stat_size(path) - 1)


def _written(tmp_path: Path) -> tuple[Path, ManifestFile]:
    folder = tmp_path / "source"
    folder.mkdir()
    entry = write_payload(storage_with(), folder, {"w": torch.arange(6.0)}, expected_bytes=0,
                          on_first_write=lambda: None)
    return folder / PAYLOAD_NAME, entry


def test_the_payload_is_written_with_its_size_and_digests(tmp_path: Path) -> None:
    writes: list[str] = []
    entry = write_payload(storage_with(), tmp_path, {"w": torch.arange(6.0)},
                          expected_bytes=1000, on_first_write=lambda: writes.append("first"))
    data = (tmp_path / PAYLOAD_NAME).read_bytes()
    assert writes == ["first"]
    assert (entry.path, entry.size_bytes) == (PAYLOAD_NAME, len(data))
    assert entry.piece_bytes == HASH_PIECE_BYTES
    assert entry.sha256 == hash_list_of(data, HASH_PIECE_BYTES)  # the pieces' hash list
    assert entry.pieces == (hashlib.sha256(data).hexdigest(),)  # one piece: a small file
    with (tmp_path / PAYLOAD_NAME).open("rb") as f:
        assert torch.equal(load_tensors(f)["w"], torch.arange(6.0))


def test_the_piece_size_is_the_callers(tmp_path: Path) -> None:
    entry = write_payload(storage_with(), tmp_path, {"w": torch.arange(600.0)},
                          expected_bytes=0, on_first_write=lambda: None, piece_bytes=512)
    data = (tmp_path / PAYLOAD_NAME).read_bytes()
    assert entry.piece_bytes == 512 and len(entry.pieces or ()) == -(-len(data) // 512)
    assert entry.sha256 == hash_list_of(data, 512)


def test_a_payload_the_disk_did_not_keep_fails(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="the storage lost data"):
        write_payload(storage_with(LosingFs()), tmp_path, {"w": torch.ones(3)},
                      expected_bytes=0, on_first_write=lambda: None)


def test_a_copy_is_verified_meanwhile_and_matches(tmp_path: Path) -> None:
    src, entry = _written(tmp_path)
    checked: list[str] = []
    target = tmp_path / "copy"
    copy_file(storage_with(), src, target, entry, name="step-1", src_fs=OsFs(),
              verify=lambda: checked.append("checked"), on_first_write=lambda: None)
    assert checked == ["checked"]
    assert target.read_bytes() == src.read_bytes()


def test_a_damaged_source_is_blamed_not_the_copy(tmp_path: Path) -> None:
    src, entry = _written(tmp_path)

    def damaged() -> None:
        raise CheckpointError("checkpoint step-1: state.pt fails its sha256 check")

    with pytest.raises(CheckpointError, match="fails its sha256"):
        copy_file(storage_with(), src, tmp_path / "copy", entry, name="step-1", src_fs=OsFs(),
                  verify=damaged, on_first_write=lambda: None)


def test_a_copy_of_another_size_than_the_manifests_fails(tmp_path: Path) -> None:
    src, entry = _written(tmp_path)
    wrong = entry.model_copy(update={"size_bytes": entry.size_bytes + 1})
    with pytest.raises(StorageError, match="does not match checkpoint step-1"):
        copy_file(storage_with(), src, tmp_path / "copy", wrong, name="step-1", src_fs=OsFs(),
                  verify=None, on_first_write=lambda: None)
