"""Issue 19: the first step of an epoch holds the work between epochs (the user's
evaluation, the scheduler, a new loader iterator): timed, but no save's or upload's toll."""

from __future__ import annotations

import pytest

from colabrun.runner.save.capture import SaveReceipt
from colabrun.runner.train.cadence import SaveCadence


def _steps(cadence: SaveCadence, start: float, n: int, step_s: float, **flags: bool) -> float:
    now = start
    for _ in range(n):
        now += step_s
        cadence.on_step(now, **{"writing": False, **flags})
    return now


def test_the_step_spanning_an_epoch_end_is_no_saves_toll() -> None:
    cadence = SaveCadence(now=0.0)
    now = _steps(cadence, 0.0, 30, 0.03)
    cadence.on_save(SaveReceipt("a", 0.001, False), now=now)
    now = _steps(cadence, now, 6, 0.03)
    cadence.on_save(SaveReceipt("b", 0.001, False), now=now)  # the epoch-end save
    cadence.on_epoch_end(now)
    now = _steps(cadence, now, 1, 0.08, writing=True)  # evaluation, scheduler, loader
    assert cadence.step_s == pytest.approx(0.08) and not cadence.is_comparable
    now = _steps(cadence, now, 6, 0.03)
    assert cadence.is_comparable
    cadence.on_save(SaveReceipt("c", 0.001, False), now=now)
    assert cadence.meter.tolls_s == pytest.approx(0.0, abs=1e-9)


def test_without_an_epoch_end_the_same_step_is_the_saves_toll() -> None:
    cadence = SaveCadence(now=0.0)
    now = _steps(cadence, 0.0, 30, 0.03)
    cadence.on_save(SaveReceipt("a", 0.001, False), now=now)
    now = _steps(cadence, now, 6, 0.03)
    cadence.on_save(SaveReceipt("b", 0.001, False), now=now)
    now = _steps(cadence, now, 1, 0.08, writing=True)
    now = _steps(cadence, now, 6, 0.03)
    cadence.on_save(SaveReceipt("c", 0.001, False), now=now)
    assert cadence.meter.tolls_s == pytest.approx(0.08 - 0.001 - 0.03), "less the stall"
