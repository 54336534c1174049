"""Tier 1: the line said at an epoch's end."""

from __future__ import annotations

from colabrun.runner.train.position import Position
from colabrun.runner.train.report import Durability, EpochMeans, epoch_line
from colabrun.runner.train.training import where_in_epochs


def test_the_means_are_the_epochs_and_start_over() -> None:
    means = EpochMeans()
    means.add({"loss": 1.0})
    means.add({"loss": 2.0, "acc": 0.5})
    assert means.take() == {"loss": 1.5, "acc": 0.5}
    assert means.take() == {}, "the next epoch starts empty"


def test_the_line_says_progress_means_and_what_is_saved() -> None:
    line = epoch_line(Position(epoch=2, step=30), epochs=5, means={"loss": 0.41234567},
                      saved="saved step-30 (durable)")
    assert line == "epoch 2/5 done, step 30: loss 0.4123; saved step-30 (durable)"
    assert epoch_line(Position(epoch=1, step=3), epochs=1, means={}, saved="") == \
        "epoch 1/1 done, step 3"


def test_what_is_saved_says_what_a_dead_runtime_would_keep() -> None:
    assert Durability().describe(now=100.0) == ""
    assert Durability(30).describe(now=100.0) == "saved step-30 (local); durable: none yet"
    assert Durability(460, 440, 97.0).describe(now=100.0) == \
        "saved step-460 (local); durable: step-440, 3s ago"
    assert Durability(460, 460, 97.0).describe(now=100.0) == "saved step-460 (durable)"


def test_a_resume_is_placed_in_epochs_counted_as_the_epoch_lines_count() -> None:
    assert where_in_epochs(0, 20, 2) == "epoch 1/2 from batch 20"
    assert where_in_epochs(1, 0, 2) == "start of epoch 2/2"
    assert where_in_epochs(2, 0, 2) == "after epoch 2/2"  # all trained, the end not recorded
