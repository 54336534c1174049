"""A payload saved and loaded in memory, and which loading failures are the payload's."""

from __future__ import annotations

import errno
import io
import pickle

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
