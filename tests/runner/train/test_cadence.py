"""Tier 1: the counters a save decision reads, fed with times (no clock, no saver)."""

from __future__ import annotations

import pytest

from colabrun.runner.save.capture import SaveReceipt
from colabrun.runner.train.cadence import STALLS_KEPT, SaveCadence


def receipt(stall_s: float, *, started_writer: bool = False) -> SaveReceipt:
    return SaveReceipt("step-000000001-g0001", stall_s, started_writer)


def test_steps_are_timed_from_the_second_one() -> None:
    cadence = SaveCadence(now=100.0)
    assert cadence.on_step(101.0, writing=False) is None, "the first step has no start"
    assert cadence.on_step(101.5, writing=False) == pytest.approx(0.5)
    assert cadence.steps_since_save == 2
    assert cadence.seconds_since_save(103.0) == pytest.approx(3.0)


def test_a_save_restarts_the_counters_and_keeps_its_stall() -> None:
    cadence = SaveCadence(now=0.0)
    for now in (1.0, 2.0, 3.0):
        cadence.on_step(now, writing=False)
    cadence.on_save(receipt(0.25), now=3.25)
    assert cadence.steps_since_save == 0
    assert cadence.seconds_since_save(4.25) == pytest.approx(1.0)
    assert list(cadence.stalls) == [0.25]
    assert cadence.meter.stall_s == pytest.approx(0.25)


def test_an_epoch_is_timed_from_the_last_epochs_end() -> None:
    """``at_epoch_end: auto`` compares an epoch's length with the adaptive interval; saves
    within it do not restart it."""
    cadence = SaveCadence(now=10.0)
    assert cadence.epoch_s(12.0) == pytest.approx(2.0), "the first, from the session's start"
    cadence.on_save(receipt(0.01), now=12.5)
    cadence.on_epoch_end(13.0)
    assert cadence.epoch_s(13.5) == pytest.approx(0.5)


def test_the_step_holding_a_save_is_metered_without_its_stall() -> None:
    """The step after a save took 0.25 s, 0.15 of it the save's stall: the meter sees
    a 0.1 s step, as typical, so the save is charged no toll on top of its stall
    (counted whole, the step would charge it 0.15 s more)."""
    cadence = SaveCadence(now=0.0)
    now = 0.0
    for _ in range(10):
        now += 0.1
        cadence.on_step(now, writing=False)
    cadence.on_save(receipt(0.15), now=now + 0.15)
    cadence.on_step(now + 0.25, writing=True)
    assert cadence.step_s == pytest.approx(0.25), "the loop's own duration"
    cadence.on_save(receipt(0.15), now=now + 0.25)
    assert cadence.meter.toll_s == pytest.approx(0.0, abs=1e-9)


def test_a_save_that_started_the_writer_resets_the_meter() -> None:
    cadence = SaveCadence(now=0.0)
    cadence.on_save(receipt(0.3), now=1.0)
    assert cadence.meter.cost_s == pytest.approx(0.3)
    cadence.on_save(receipt(0.05, started_writer=True), now=2.0)
    assert cadence.meter.cost_s is None, "a one-time cost is not learned"
    assert list(cadence.stalls) == [0.3, 0.05], "but the stall is kept"


def test_only_the_newest_stalls_are_kept() -> None:
    cadence = SaveCadence(now=0.0)
    for index in range(STALLS_KEPT + 5):
        cadence.on_save(receipt(float(index)), now=float(index))
    assert len(cadence.stalls) == STALLS_KEPT and cadence.stalls[0] == 5.0
