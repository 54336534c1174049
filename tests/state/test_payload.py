"""A payload saved and loaded in memory, and which loading failures are the payload's."""

from __future__ import annotations

import errno
import io
import pickle
import zipfile
from typing import Any

import pytest
import torch

from colabrun.jobs.errors import CheckpointError, StorageError
from colabrun.state.payload import load_errors_told, load_tensors, save_tensors
from tests.helpers import assert_exactly_equal


def test_a_payload_round_trips() -> None:
    payload = {"tracked": {"w": torch.arange(5.0)}, "extra": {"step": 3}}
    file = io.BytesIO()
    save_tensors(payload, file)
    file.seek(0)
    assert_exactly_equal(load_tensors(file), payload)


needs_the_option = pytest.mark.skipif(
    not hasattr(torch.serialization, "set_crc32_options"),
    reason="torch < 2.5 has no CRC32 option: its saves keep their CRC32s")


def _crcs(data: bytes) -> list[int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [info.CRC for info in archive.infolist()]


@needs_the_option
def test_a_payload_has_no_zip_crc32s_and_the_option_is_back_on_after() -> None:
    """The manifest's sha256 covers the bytes; the process's own saves keep their CRC32s."""
    file = io.BytesIO()
    save_tensors({"tracked": {"w": torch.arange(1000.0)}}, file)
    assert _crcs(file.getvalue()) and set(_crcs(file.getvalue())) == {0}
    assert torch.serialization.get_crc32_options() is True
    mine = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, mine)
    assert 0 not in _crcs(mine.getvalue())


@needs_the_option
def test_the_option_is_back_on_before_the_first_byte_is_written() -> None:
    """torch reads it as its zip writer opens: a save of the training code in another
    thread while this one writes keeps its CRC32s."""
    seen: list[bool] = []

    class Spy(io.BytesIO):
        def write(self, data: Any) -> int:
            seen.append(torch.serialization.get_crc32_options())
            return super().write(data)

    file = Spy()
    save_tensors({"tracked": {"w": torch.arange(1000.0)}}, file)
    assert seen and all(seen), "on at every write"
    assert set(_crcs(file.getvalue())) == {0}, "yet this save's writer opened without them"


@needs_the_option
def test_the_option_is_back_on_when_the_save_fails() -> None:
    with pytest.raises(Exception, match="lambda|pickle"):
        save_tensors({"extra": lambda: None}, io.BytesIO())
    assert torch.serialization.get_crc32_options() is True


@pytest.mark.parametrize(("exc", "told"), [
    (pickle.UnpicklingError("Weights only load failed"), "could run arbitrary code"),
    (RuntimeError("PytorchStreamReader failed"), "cannot load state.pt: PytorchStreamReader"),
    (EOFError("Ran out of input"), "cannot load state.pt: Ran out of input"),
])
def test_the_payloads_own_failures_are_checkpoint_errors(exc: Exception, told: str) -> None:
    with pytest.raises(CheckpointError, match=told) as info, load_errors_told("step-1"):
        raise exc
    assert str(info.value).startswith("checkpoint step-1: ")
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("exc", [StorageError(errno.EIO, "mount gone"), KeyError("x"),
                                 CheckpointError("checkpoint step-1: already told")])
def test_other_failures_pass_unchanged(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info, load_errors_told("step-1"):
        raise exc
    assert info.value is exc
