"""Tier 1: what the loop does at a boundary (save, stop, go on): a pure decision."""

from __future__ import annotations

from typing import Any

import pytest

from colabrun.jobs.spec import CheckpointPolicy
from colabrun.runner.train.boundary import Decision, Situation, decide
from colabrun.runner.watch.deadline import Deadline

EVERY_4 = CheckpointPolicy(every_steps=4, every_s=None, at_epoch_end=True, max_overhead=None)


def situation(**fields: Any) -> Situation:
    values: dict[str, Any] = {"steps_since_save": 1, "seconds_since_save": 1.0, **fields}
    return Situation(**values)


def test_nothing_due_goes_on() -> None:
    decision = decide(EVERY_4, situation(steps_since_save=3))
    assert decision == Decision() and decision.goes_on


def test_the_policy_names_the_save() -> None:
    assert decide(EVERY_4, situation(steps_since_save=4)) == Decision(save="every_steps")
    assert decide(EVERY_4, situation(at_epoch_end=True)) == Decision(save="epoch_end")


def test_after_an_epochs_last_batch_the_epoch_end_save_is_left_to_come() -> None:
    """every_steps dividing the epoch: one save at that step, the epoch end's."""
    assert decide(EVERY_4, situation(steps_since_save=4, last_batch=True)).goes_on
    no_epoch_end = CheckpointPolicy(every_steps=4, every_s=None, at_epoch_end=False,
                                    max_overhead=None)
    assert decide(no_epoch_end, situation(steps_since_save=4, last_batch=True)) == Decision(
        save="every_steps"), "unless no epoch-end save comes"


def test_after_an_epochs_last_batch_auto_takes_a_save_that_its_epoch_end_would_skip() -> None:
    """``at_epoch_end: auto`` with epochs shorter than the adaptive interval: no epoch-end
    save comes, so a periodic save due at the last batch is taken there."""
    auto = CheckpointPolicy(every_steps=4, every_s=None, at_epoch_end="auto", max_overhead=0.02)
    short = situation(steps_since_save=4, last_batch=True, save_cost_s=0.005,
                      epoch_s=0.1)
    assert decide(auto, short) == Decision(save="every_steps")
    long = situation(steps_since_save=4, last_batch=True, save_cost_s=0.005,
                     epoch_s=60.0)
    assert decide(auto, long).goes_on, "an epoch-end save comes at the same step"
    assert decide(auto, situation(steps_since_save=4, at_epoch_end=True, save_cost_s=0.005,
                                  epoch_s=60.0)) == Decision(save="epoch_end")


def test_an_owed_epoch_end_save_is_taken_whatever_the_new_epochs_length() -> None:
    """Held for an accumulation spanning the epoch's end, then owed: the next epoch has
    just begun, but the save was wanted for the epoch that ended."""
    auto = CheckpointPolicy(every_s=None, at_epoch_end="auto", max_overhead=0.02)
    owed = situation(steps_since_save=1, epoch_end_owed=True, save_cost_s=0.005, epoch_s=0.01)
    assert decide(auto, owed) == Decision(save="epoch_end")


def test_a_requested_checkpoint_saves_and_goes_on() -> None:
    assert decide(EVERY_4, situation(checkpoint_requested=True)) == Decision(save="requested")
    assert decide(EVERY_4, situation(steps_since_save=4, checkpoint_requested=True)) == \
        Decision(save="every_steps"), "a save due anyway serves the request"


@pytest.mark.parametrize(("unsaved", "expected"), [
    (True, Decision(save="interrupted", stop="interrupted")),
    (False, Decision(stop="interrupted")),
])
def test_a_stop_saves_first_only_what_would_be_lost(unsaved: bool, expected: Decision) -> None:
    decided = decide(EVERY_4, situation(steps_since_save=0, stop_reason="interrupted",
                                        has_unsaved_work=unsaved))
    assert decided == expected


def test_the_deadline_stops_when_the_final_save_must_start() -> None:
    deadline = Deadline(ends_at=1000.0, margin_s=10.0, safety=1.0)
    early = situation(deadline=deadline, now=900.0, step_s=1.0, save_s=5.0)
    assert decide(EVERY_4, early).goes_on, "16 s needed, 100 s left"
    late = situation(deadline=deadline, now=990.0, step_s=1.0, save_s=5.0)
    assert decide(EVERY_4, late) == Decision(save="deadline", stop="deadline")


def test_an_unmeasured_save_is_assumed_long_for_the_deadline() -> None:
    deadline = Deadline(ends_at=1000.0, margin_s=0.0, safety=1.0, assumed_save_s=60.0)
    assert decide(EVERY_4, situation(deadline=deadline, now=950.0)).stop == "deadline"
    assert decide(EVERY_4, situation(deadline=deadline, now=950.0, save_s=1.0)).goes_on


def test_a_stop_asked_for_wins_over_the_deadline() -> None:
    deadline = Deadline(ends_at=0.0)
    decided = decide(EVERY_4, situation(deadline=deadline, now=10.0, stop_reason="requested"))
    assert decided == Decision(save="requested", stop="requested")


def test_the_adaptive_cadence_waits_for_a_busy_writer() -> None:
    adaptive = CheckpointPolicy(every_steps=None, every_s=None, at_epoch_end=False,
                                max_overhead=0.1)
    assert decide(adaptive, situation(save_cost_s=None)) == Decision(save="adaptive")
    assert decide(adaptive, situation(save_cost_s=None, writer_busy=True)).goes_on
