"""Tier 1: the loop's position, a pure value."""

from __future__ import annotations

import pytest

from colabrun.runner.train.position import EPOCH_START, IN_EPOCH, Position


def test_a_step_a_batch_and_an_epoch_move_their_own_counters() -> None:
    start = Position(epoch=1, batch=3, step=40)
    assert start.after_step() == Position(1, 3, 41)
    assert start.after_batch() == Position(1, 4, 40)
    assert start.after_epoch(1) == Position(2, 0, 40), "the next epoch starts at batch 0"
    assert start == Position(1, 3, 40), "a value: moving makes a new one"


def test_the_epoch_done_is_the_one_named() -> None:
    """``run.epochs()`` names the epoch it yielded: a resumed run's count follows it."""
    assert Position(epoch=0, batch=5, step=9).after_epoch(4) == Position(5, 0, 9)


@pytest.mark.parametrize(("where", "batch"), [(IN_EPOCH, 7), (EPOCH_START, 0)])
def test_a_checkpoint_between_epochs_records_batch_zero(where: str, batch: int) -> None:
    assert Position(2, 7, 30).saved_at(where) == Position(2, batch, 30)
