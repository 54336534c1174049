"""Tier 1: which local checkpoints a commit rotates out (a pure decision over names).

The root's rotation (:func:`plan_rotation`) is tested in tests/runner/test_pure_policies.py.
"""

from __future__ import annotations

import random

import pytest

from colabrun.jobs.spec import KeepBest
from colabrun.state.checkpoints import checkpoint_name
from colabrun.state.model import CheckpointRecord
from colabrun.state.rotation import best_record, plan_local_rotation, plan_rotation


def names(*steps: int) -> list[str]:
    return [checkpoint_name(step, 1) for step in steps]


def test_the_newest_are_kept_and_the_rest_go_oldest_first() -> None:
    assert plan_local_rotation(names(3, 1, 4, 2), keep=2, protected=None) == names(1, 2)


def test_the_one_being_uploaded_is_kept_whatever_its_age() -> None:
    doomed = plan_local_rotation(names(1, 2, 3, 4, 5), keep=2, protected=checkpoint_name(2, 1))
    assert doomed == names(1, 3)


def test_a_protected_name_among_the_newest_changes_nothing() -> None:
    assert plan_local_rotation(names(1, 2, 3), keep=2, protected=checkpoint_name(3, 1)) == \
        names(1)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_nothing_goes_while_there_are_at_most_keep(count: int) -> None:
    assert plan_local_rotation(names(*range(1, count + 1)), keep=2, protected=None) == []


@pytest.mark.parametrize("keep", [0, -3])
def test_the_newest_is_always_kept(keep: int) -> None:
    """The one just committed survives even a keep below 1 (a slice ``[:-0]`` would
    keep everything, ``[:-(-3)]`` the wrong ones)."""
    assert plan_local_rotation(names(1, 2, 3), keep=keep, protected=None) == names(1, 2)


def test_steps_are_ordered_as_numbers_beyond_nine_digits() -> None:
    old, new = checkpoint_name(999_999_999, 1), checkpoint_name(1_000_000_000, 1)
    assert plan_local_rotation([new, old], keep=1, protected=None) == [old]


def test_generation_then_retry_break_ties_of_a_step() -> None:
    keys = [(10, 2, 0), (10, 1, 3), (10, 2, 1), (9, 9, 9)]
    shuffled = [checkpoint_name(*key) for key in keys]
    random.Random(1).shuffle(shuffled)
    doomed = plan_local_rotation(shuffled, keep=1, protected=None)
    assert doomed == [checkpoint_name(*k) for k in [(9, 9, 9), (10, 1, 3), (10, 2, 0)]]


def test_what_is_no_checkpoint_name_is_never_deleted_nor_counted() -> None:
    listed = [*names(1, 2, 3), ".tmp-step-000000004-g0001-ab12", "notes.txt"]
    assert plan_local_rotation(listed, keep=2, protected=None) == names(1)


def test_a_name_listed_twice_counts_once() -> None:
    assert plan_local_rotation(names(1, 2, 2, 3), keep=2, protected=None) == names(1)


# -- the root: plan_rotation, with the best checkpoint kept ------------------------------------


def _record(step: int, **metrics: float) -> CheckpointRecord:
    return CheckpointRecord(name=checkpoint_name(step, 1), step=step, epoch=0, batch=step,
                            generation=1, size_bytes=1, sha256="0" * 64, created_at=float(step),
                            metrics=metrics)


ACCURACIES = [_record(10, acc=0.5), _record(20, acc=0.9), _record(30, acc=0.7),
              _record(40), _record(50, acc=0.6)]


def test_the_best_checkpoint_is_kept_out_of_rotation() -> None:
    best = KeepBest(metric="acc", mode="max")
    doomed = plan_rotation(ACCURACIES, keep_last=2, newest_verified=None, keep_best=best)
    assert doomed == [checkpoint_name(10, 1), checkpoint_name(30, 1)]  # step 20 stays
    without = plan_rotation(ACCURACIES, keep_last=2, newest_verified=None)
    assert checkpoint_name(20, 1) in without


def test_best_is_the_lowest_for_min_and_the_newest_among_equals() -> None:
    assert best_record(ACCURACIES, KeepBest(metric="acc", mode="max")) == ACCURACIES[1]
    assert best_record(ACCURACIES, KeepBest(metric="acc")) == ACCURACIES[0]
    tied = [_record(10, loss=1.0), _record(20, loss=1.0)]
    assert best_record(tied, KeepBest(metric="loss")) == tied[1]
    assert best_record(ACCURACIES, KeepBest(metric="loss")) is None  # never logged
