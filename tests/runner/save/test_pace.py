"""The upload pace: pure, fed with step durations."""

from __future__ import annotations

import pytest

from colabrun.runner.save.pace import UploadPace
from colabrun.runner.save.policy import PROBE_EVERY, PROBE_STEPS


def _paced(clean_s: float, during_s: float, steps: int, *, budget: float = 0.01) -> UploadPace:
    pace = UploadPace(budget=budget)
    for _ in range(10):
        pace.observe_step(clean_s, uploading=False)
    for _ in range(steps):
        pace.observe_step(during_s, uploading=True)
    return pace


def test_an_upload_that_slows_nothing_is_followed_at_once() -> None:
    pace = _paced(0.03, 0.03, 100)
    assert pace.slowdown == pytest.approx(0.0)
    assert pace.rest_s(3.0) == 0.0


def test_back_to_back_uploads_rest_for_a_probe_once_too_few_clean_steps_were_seen() -> None:
    pace = _paced(0.03, 0.03, 3)  # 10 clean steps, then an upload
    rests = []
    for _ in range(2 * PROBE_EVERY):
        rests.append(pace.rest_s(0.1))
        for _ in range(3):
            pace.observe_step(0.03, uploading=True)  # the next upload, at once
    probe = PROBE_STEPS * 0.03
    assert rests[:PROBE_EVERY] == [0.0] * PROBE_EVERY, "the 10 clean steps still count"
    assert rests[PROBE_EVERY] == pytest.approx(probe)
    assert pace.probe_due, "no clean step was seen since"


def test_the_probes_clean_steps_hold_off_the_next_probes() -> None:
    pace = UploadPace()
    assert pace.probe_due
    pace.observe_step(0.03, uploading=True)
    assert pace.rest_s(0.1) == pytest.approx(PROBE_STEPS * 0.03)
    for _ in range(PROBE_STEPS):
        pace.observe_step(0.03, uploading=False)
    rests = []
    for _ in range(PROBE_EVERY + 1):
        pace.observe_step(0.03, uploading=True)
        rests.append(pace.rest_s(0.1))
    assert rests == [0.0] * PROBE_EVERY + [pytest.approx(PROBE_STEPS * 0.03)]


def test_the_rest_keeps_the_uploads_cost_within_the_budget() -> None:
    pace = _paced(0.1, 0.15, 40, budget=0.02)  # a 6 s upload, steps 50% slower
    assert pace.slowdown == pytest.approx(0.5)
    upload_s = 40 * 0.15
    rest = pace.rest_s(upload_s)
    assert pace.toll_s / (upload_s + rest) == pytest.approx(0.02)


def test_noise_cancels() -> None:
    pace = UploadPace()
    for _ in range(10):
        pace.observe_step(0.1, uploading=False)
    for i in range(40):
        pace.observe_step(0.1 + (0.01 if i % 2 else -0.01), uploading=True)
    assert pace.rest_s(4.0) == 0.0
    assert pace.cost_s == pytest.approx(0.0, abs=1e-12)


def test_steps_paying_for_a_local_write_or_too_long_count_for_no_upload() -> None:
    pace = _paced(0.1, 0.1, 5)
    pace.observe_step(0.5, uploading=True, writing=True)  # the local save's toll
    pace.observe_step(0.9, uploading=True)                # an evaluation, not a slowdown
    assert pace.slowdown == pytest.approx(0.0)


def test_a_short_step_held_up_by_a_gil_switch_interval_is_a_toll() -> None:
    pace = _paced(0.0025, 0.0025, 4)
    pace.observe_step(0.0025 + 0.005, uploading=True)  # over 3x, but only 5 ms longer
    pace.observe_step(0.0025 + 0.2, uploading=True)    # a GC pause, an evaluation
    pace.rest_s(0.02)
    assert pace.cost_s == pytest.approx(0.005)


def test_before_any_measurement_the_next_upload_is_not_held_back() -> None:
    assert UploadPace().rest_s(10.0) == 0.0


def test_what_one_upload_costs_is_learned_for_the_adaptive_cadence() -> None:
    pace = UploadPace()
    assert pace.cost_s is None
    for _ in range(10):
        pace.observe_step(0.1, uploading=False)
    for _ in range(10):
        pace.observe_step(0.12, uploading=True)  # 10 steps 20 ms slower: 0.2 s lost
    pace.rest_s(1.2)
    assert pace.cost_s == pytest.approx(0.2)
    for _ in range(10):
        pace.observe_step(0.1, uploading=True)  # the next one costs nothing
    pace.rest_s(1.0)
    assert pace.cost_s == pytest.approx(0.7 * 0.2), "a moving average"


def test_one_slow_upload_rests_the_next_by_the_average_cost_not_its_own() -> None:
    pace = _paced(0.03, 0.03, 3, budget=0.02)
    for _ in range(4):
        pace.rest_s(0.1)  # uploads that cost nothing...
        pace.observe_step(0.03, uploading=False)
        pace.observe_step(0.03, uploading=True)
    pace.observe_step(0.07, uploading=True)  # ...then one whose steps lost 40 ms
    rest = pace.rest_s(0.1)
    assert pace.cost_s == pytest.approx(0.3 * 0.04)
    assert rest == pytest.approx(0.3 * 0.04 / 0.02 - 0.1), "not 0.04 / 0.02 - 0.1"
