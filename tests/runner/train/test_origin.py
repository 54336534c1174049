"""Whose code raised (runner/train/origin.py): the training function's, or colabrun's own,
so that a folder colabrun cannot write is never blamed on the user's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from colabrun.runner.train import training
from colabrun.runner.train.origin import kind_of, origin, origin_of
from colabrun.state.jobdir import JobDir

COLABRUN = training.__file__  # a file of colabrun's
TORCH = torch.__file__
USER = "/content/train.py"


def test_each_file_has_an_author() -> None:
    assert kind_of(COLABRUN) == "colabrun"
    assert kind_of(TORCH) == "library"
    assert kind_of(json.__file__) == "library"
    assert kind_of(USER) == "user"
    assert kind_of("<ipython-input-3-abc>") == "user"  # a notebook cell
    assert kind_of("<frozen importlib._bootstrap>") == "library"
    examples = Path(training.__file__).parents[2] / "jobs" / "examples" / "digits.py"
    assert kind_of(str(examples)) == "user"  # the built-in jobs are training functions


@pytest.mark.parametrize(("frames", "expected"), [
    # colabrun's setup, before the user's function was called
    ([(COLABRUN, "_train"), (COLABRUN, "claim_local"), (TORCH, "x")], 1),
    # the user's function raised, or torch called from it did
    ([(COLABRUN, "_call"), (USER, "train")], None),
    ([(COLABRUN, "_call"), (USER, "train"), (TORCH, "forward")], None),
    # the handle's own code, called by the user's function, raised
    ([(COLABRUN, "_call"), (USER, "train"), (COLABRUN, "save"), (TORCH, "save")], 2),
    # after the user's function returned: colabrun closing the loop
    ([(COLABRUN, "_call"), (COLABRUN, "close")], 1),
    # the user's code called back from colabrun (a dataset's __getitem__)
    ([(COLABRUN, "_call"), (USER, "train"), (COLABRUN, "batches"), (USER, "__getitem__")],
     None),
])
def test_origin_is_the_innermost_frame_that_is_no_library_s(
        frames: list[tuple[str, str]], expected: int | None) -> None:
    assert origin(frames, entry="_call") == expected


def test_a_real_error_of_colabrun_s_is_traced_to_its_function(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    job = JobDir(tmp_path / "runs", "d", local_root=tmp_path / "a-file")
    with pytest.raises(OSError) as caught:
        job.claim_local(1.0)
    found = origin_of(caught.value)
    assert found is not None and found.name in {"claim_local", "mkdir", "rmtree"}
    assert kind_of(found.filename) == "colabrun"


def test_a_user_s_error_has_no_colabrun_origin() -> None:
    """This test file plays the user's code."""
    with pytest.raises(ValueError) as caught:
        int("not a number")
    assert origin_of(caught.value) is None
    with pytest.raises(RuntimeError) as caught_torch:
        torch.zeros(2) + torch.zeros(3)
    assert origin_of(caught_torch.value) is None
