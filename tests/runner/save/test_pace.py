"""The upload pace: pure, fed with step durations."""

from __future__ import annotations

import pytest

from colabrun.runner.save.pace import PROBE_STEPS, UploadPace


def _paced(clean_s: float, during_s: float, steps: int, *, budget: float = 0.01) -> UploadPace:
    pace = UploadPace(budget=budget)
    for _ in range(10):
        pace.observe_step(clean_s, uploading=False)
    for _ in range(steps):
        pace.observe_step(during_s, uploading=True)
    return pace


def test_an_upload_that_slows_nothing_is_followed_at_once_but_for_the_probe() -> None:
    pace = _paced(0.03, 0.03, 100)
    assert pace.slowdown == pytest.approx(0.0)
    assert pace.rest_s(3.0) == pytest.approx(PROBE_STEPS * 0.03)


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
    assert pace.rest_s(4.0) == pytest.approx(PROBE_STEPS * 0.11)  # the probe: the last step


def test_steps_paying_for_a_local_write_or_too_long_count_for_no_upload() -> None:
    pace = _paced(0.1, 0.1, 5)
    pace.observe_step(0.5, uploading=True, writing=True)  # the local save's toll
    pace.observe_step(0.9, uploading=True)                # an evaluation, not a slowdown
    assert pace.slowdown == pytest.approx(0.0)


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
