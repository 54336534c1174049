"""Tier 1 for hang detection: heartbeats fed with fake times, no processes, no clock."""

from __future__ import annotations

import pytest

from colabrun.jobs.spec import WatchdogPolicy
from colabrun.runner.watch.messages import Beat, Phase
from colabrun.runner.watch.stall import Stall, StallLimits, StallWatch

LIMITS = StallLimits(factor=5.0, floor_s=10.0, setup_s=100.0)


def beat(step: int, phase: Phase = "train", *, epoch: int = 0,
         step_s: float | None = 0.5) -> Beat:
    return Beat(step=step, epoch=epoch, phase=phase, step_s=step_s)


def training_watch(*, steps: int = 3, every_s: float = 1.0) -> tuple[StallWatch, float]:
    """A watch that saw setup end at t=1 and ``steps`` steps ``every_s`` apart; and the
    time of the last one."""
    watch = StallWatch(LIMITS, now=0.0)
    watch.observe(beat(0, "setup", step_s=None), now=0.5)
    now = 1.0
    for step in range(steps):
        watch.observe(beat(step), now=now)
        now += every_s
    return watch, now - every_s


def test_limits_come_from_the_spec_watchdog() -> None:
    policy = WatchdogPolicy(stall_floor_s=42.0, stall_factor=3.0, setup_s=99.0)
    assert StallLimits.of(policy) == StallLimits(factor=3.0, floor_s=42.0, setup_s=99.0)


def test_a_worker_that_steps_is_fine_and_one_that_stops_is_hung_past_the_floor() -> None:
    watch, last = training_watch()
    assert watch.check(now=last + 9.9) is None
    watch.observe(beat(2), now=last + 9.0)  # the same step again: no progress
    stall = watch.check(now=last + 10.0)
    assert stall == Stall(silent_s=10.0, limit_s=10.0, phase="train", step=2)
    assert stall.detail() == "hung for 10 s at step 2"


def test_the_limit_is_learned_from_the_step_time_and_the_longest_gap() -> None:
    watch, last = training_watch()
    watch.observe(beat(3, step_s=4.0), now=last + 4.0)
    assert watch.limit_s() == pytest.approx(20.0), "5 x a 4 s step beats the 10 s floor"
    watch.observe(beat(4, epoch=1, step_s=0.5), now=last + 4.0 + 8.0)  # an evaluation
    assert watch.longest_gap_s == pytest.approx(8.0)
    assert watch.limit_s() == pytest.approx(40.0), "5 x the 8 s gap; step_s kept as 0.5"


def test_setup_may_take_setup_s_and_its_length_is_not_learned_as_a_gap() -> None:
    watch = StallWatch(LIMITS, now=0.0)
    watch.observe(beat(0, "setup", step_s=None), now=1.0)  # the first beat is progress
    assert watch.check(now=100.9) is None, "setup_s, not the floor, bounds the setup"
    assert watch.check(now=101.0) == Stall(silent_s=100.0, limit_s=100.0, phase="setup",
                                           step=0)
    watch.observe(beat(0, "train"), now=90.0)
    assert watch.longest_gap_s is None
    assert watch.check(now=99.0) is None and watch.check(now=100.0) is not None


@pytest.mark.parametrize("phase", ["save", "load"])
def test_saves_and_loads_never_count(phase: Phase) -> None:
    watch, last = training_watch()
    watch.observe(beat(3, phase), now=last + 1.0)
    assert watch.check(now=last + 10_000.0) is None, "an hour-long save is no hang"
    watch.observe(beat(3, "train"), now=last + 10_000.0)  # out of it: the clock restarts
    assert watch.longest_gap_s == pytest.approx(1.0), "the save's length is no gap"
    assert watch.check(now=last + 10_009.0) is None
    assert watch.check(now=last + 10_010.0) is not None


def test_a_restarted_worker_starts_afresh_but_keeps_the_learned_gap() -> None:
    watch, last = training_watch()
    watch.observe(beat(3, epoch=1), now=last + 30.0)
    assert watch.longest_gap_s == pytest.approx(30.0)
    watch.restart(now=1000.0)
    assert watch.phase == "setup" and watch.last is None and watch.step_s is None
    assert watch.check(now=1099.0) is None, "the new worker's setup has setup_s again"
    watch.observe(beat(0, "setup", step_s=None), now=1001.0)
    watch.observe(beat(3), now=1050.0)
    assert watch.limit_s() == pytest.approx(150.0), "5 x the gap learned before the restart"
