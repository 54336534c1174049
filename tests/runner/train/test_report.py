"""Tier 1: the line said at an epoch's end."""

from __future__ import annotations

from colabrun.runner.train.position import Position
from colabrun.runner.train.report import EpochMeans, epoch_line


def test_the_means_are_the_epochs_and_start_over() -> None:
    means = EpochMeans()
    means.add({"loss": 1.0})
    means.add({"loss": 2.0, "acc": 0.5})
    assert means.take() == {"loss": 1.5, "acc": 0.5}
    assert means.take() == {}, "the next epoch starts empty"


def test_the_line_says_progress_means_and_the_newest_checkpoint() -> None:
    line = epoch_line(Position(epoch=2, step=30), epochs=5, means={"loss": 0.41234567},
                      newest="step-000000030-g0001")
    assert line == "epoch 2/5 done, step 30: loss 0.4123; saved step-000000030-g0001"
    assert epoch_line(Position(epoch=1, step=3), epochs=1, means={}, newest=None) == \
        "epoch 1/1 done, step 3"
