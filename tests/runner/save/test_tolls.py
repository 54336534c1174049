"""What the two meters count (issue 19): each step that a save or an upload slowed, once,
short steps held up by another thread's Python work included. Pure: fed with durations."""

from __future__ import annotations

import pytest

from colabrun.runner.save.pace import UploadPace
from colabrun.runner.save.policy import CostMeter, is_outlier


def test_a_short_step_held_up_by_a_gil_switch_interval_is_no_outlier() -> None:
    assert not is_outlier(0.0025 + 0.005, 0.0025), "3x a 2.5 ms step, 5 ms longer"
    assert is_outlier(0.0025 + 0.2, 0.0025), "a GC pause, an evaluation"
    assert not is_outlier(0.25, 0.1) and is_outlier(0.31, 0.1), "long steps: 3x"


def test_the_save_toll_counts_the_steps_a_background_thread_held_up() -> None:
    meter = CostMeter()
    for _ in range(30):
        meter.observe_step(0.0025)
    meter.observe_save(0.001)
    for step_s in (0.0075, 0.0025, 0.0125):  # the first two while writing
        meter.observe_step(step_s, writing=step_s > 0.005)
    meter.observe_save(0.001)
    assert meter.toll_s == pytest.approx(0.005 + 0.01)


def test_a_save_and_the_steps_it_pays_for_are_flagged() -> None:
    meter = CostMeter(tail_steps=2)
    flags = []
    for writing in (False, True, True, False, False, False, False):
        meter.observe_step(0.1, writing=writing)
        flags.append(meter.paid)
    assert flags == [False, True, True, True, True, False, False], "in flight, then 2 more"


def test_a_step_paying_for_a_save_during_an_upload_is_counted_once() -> None:
    """An upload starts as its save's write ends, so the save's tail runs during it: those
    steps are the save's toll, and the upload pace leaves them out, as the loop feeds it
    (:meth:`colabrun.runner.train.saving.Saving.stepped`)."""
    meter, pace = CostMeter(tail_steps=4), UploadPace(budget=0.02)
    for _ in range(30):
        meter.observe_step(0.03)
        pace.observe_step(0.03, uploading=False, writing=meter.paid)
    meter.observe_save(0.001)
    for writing, uploading in [(True, False)] + [(False, True)] * 6:
        meter.observe_step(0.04, writing=writing, uploading=uploading)
        pace.observe_step(0.04, uploading=uploading, writing=meter.paid)
    meter.observe_save(0.001)
    pace.rest_s(0.2)
    assert meter.toll_s == pytest.approx(5 * 0.01), "the write and 4 steps after it"
    assert pace.cost_s == pytest.approx(2 * 0.01), "the 2 upload steps after those"
