"""Tier 1 for the supervisor's decisions (fake times, no processes) and tier 2 for
the control folder (a real folder, both watchdog observers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.display.status import status_line
from colabrun.runner.train.data import split_batch
from colabrun.runner.train.live import LiveProgress
from colabrun.runner.train.report import Durability
from colabrun.runner.watch.control import ControlWatcher, filesystem_type, needs_polling, request
from colabrun.runner.watch.deadline import HOUR, Deadline, budget_s
from colabrun.runner.watch.restarts import (
    Attempt,
    Exit,
    attempts_without_progress,
    backoff_s,
    should_restart,
    stall_timeout_s,
)
from colabrun.state.storage import Storage

T0 = 1_700_000_000.0


@pytest.mark.parametrize(("platform", "spec", "expected"), [
    ("colab", None, 12 * HOUR), ("colab_pro", None, 24 * HOUR), ("kaggle", None, 12 * HOUR),
    ("local", None, None), ("local", 600.0, 600.0), ("colab", 3600.0, 3600.0)])
def test_budget(platform: str, spec: float | None, expected: float | None) -> None:
    assert budget_s(platform, spec_budget_s=spec) == expected


def test_deadline_save_starts_when_step_plus_save_no_longer_fit() -> None:
    deadline = Deadline.of(started_at=T0, budget=12 * HOUR, margin_s=120.0)
    needed = (2.0 + 30.0) * 1.5 + 120.0  # one step, one save, safety factor, margin
    cutoff = T0 + 12 * HOUR
    assert not deadline.must_save_now(cutoff - needed - 0.01, step_s=2.0, save_s=30.0)
    assert deadline.must_save_now(cutoff - needed, step_s=2.0, save_s=30.0)
    assert deadline.time_left(cutoff - 5) == pytest.approx(5)


def test_an_unmeasured_save_is_assumed_slow_and_no_budget_never_stops() -> None:
    deadline = Deadline.of(started_at=T0, budget=1000.0, margin_s=0.0, assumed_save_s=60.0)
    assert deadline.must_save_now(T0 + 1000 - 90, step_s=None, save_s=None)
    assert not Deadline.of(started_at=T0, budget=None).must_save_now(T0 + 1e9, step_s=1,
                                                                     save_s=1)


def test_a_short_budget_caps_the_margin_and_the_assumed_save_at_a_tenth_of_it() -> None:
    short = Deadline.of(started_at=T0, budget=25.0, margin_s=120.0, assumed_save_s=60.0)
    assert (short.margin_s, short.assumed_save_s) == (2.5, 2.5)
    needed = (0.0 + 2.5) * 1.5 + 2.5
    assert not short.must_save_now(T0 + 25 - needed - 0.01, step_s=None, save_s=None)
    assert short.must_save_now(T0 + 25 - needed, step_s=None, save_s=None)
    long = Deadline.of(started_at=T0, budget=12 * HOUR, margin_s=120.0, assumed_save_s=60.0)
    assert (long.margin_s, long.assumed_save_s) == (120.0, 60.0), "hours: as configured"


def test_restarts_are_capped_by_attempts_without_progress() -> None:
    crash = Attempt(Exit.CRASHED, progressed=False)
    progress = Attempt(Exit.CRASHED, progressed=True)
    assert should_restart([crash], cap=1)
    assert not should_restart([crash, crash], cap=1)
    assert should_restart([crash, progress, crash], cap=1), "progress resets the count"
    assert attempts_without_progress([progress, crash, crash]) == 2
    assert not should_restart([Attempt(Exit.FAILED, progressed=False)], cap=5), "a bug: no retry"
    assert not should_restart([Attempt(Exit.STOPPED, progressed=True)], cap=5)
    assert should_restart([Attempt(Exit.HUNG, False)], cap=1)
    assert should_restart([Attempt(Exit.OOM, False)], cap=1)


def test_backoff_grows_and_resets() -> None:
    crash = Attempt(Exit.CRASHED, progressed=False)
    assert [backoff_s([crash] * n, base_s=1, max_s=5) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert backoff_s([crash, Attempt(Exit.CRASHED, True)]) == 0


def test_stall_timeout_is_learned_with_a_floor() -> None:
    assert stall_timeout_s(step_s=0.1, longest_gap_s=None, factor=20, floor_s=60) == 60
    assert stall_timeout_s(step_s=0.1, longest_gap_s=30.0, factor=20, floor_s=60) == 600
    assert stall_timeout_s(step_s=10.0, longest_gap_s=2.0, factor=20, floor_s=60) == 200


def test_status_line_says_progress_speed_eta_and_time_left() -> None:
    progress = LiveProgress(step=100, epoch=2, epochs_total=8, batch=10, batches_in_epoch=45,
                            phase="train", step_s=0.05,
                            saved=Durability(90, 45, durable_at=T0 - 90))
    deadline = Deadline.of(started_at=T0 - HOUR, budget=12 * HOUR)
    line = status_line(progress, deadline=deadline, now=T0)
    remaining = (8 - 2) * 45 - 10
    assert line.startswith("epoch 3/8, step 100 (batch 10/45), 20.0 steps/s")
    assert f"ETA {remaining * 0.05 // 1:.0f}s" in line
    assert "runtime left 11h00m" in line
    assert line.endswith("saved step-90 (local); durable: step-45, 1m ago")
    assert "no runtime limit" in status_line(progress, deadline=Deadline(None), now=T0)


def test_split_keeps_the_effective_batch() -> None:
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    pieces = list(split_batch((x, y), 4))
    assert [len(p[0][0]) for p in pieces] == [2, 3, 2, 3]
    assert sum(w for _, w in pieces) == pytest.approx(1.0)
    assert torch.equal(torch.cat([p[0][0] for p in pieces]), x)
    assert list(split_batch({"x": x}, 1)) == [({"x": x}, 1.0)]
    with pytest.raises(HandleError, match="cannot cut a batch of 10 into 16"):
        list(split_batch(x, 16))


def test_filesystem_type_of_a_local_folder(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) != ""
    assert not filesystem_type(tmp_path).startswith("fuse") or needs_polling(tmp_path)


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
def test_watcher_sees_requests_and_reports_unknown_files_once(tmp_path: Path,
                                                              polling: bool) -> None:
    storage = Storage()
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "stop").write_text("left over\n")
    watcher = ControlWatcher(tmp_path, storage, polling=polling, interval_s=0.05)
    try:
        assert watcher.start() == (["stop"], []), "a stale request is reported, not acted on"
        request(tmp_path, "checkpoint", storage)
        (tmp_path / "control" / "pause").write_text("?\n")
        found: list[str] = []
        unknown: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (found and unknown):
            new, odd = watcher.pending()
            found += new
            unknown += odd
            time.sleep(0.02)
        assert found == ["checkpoint"] and unknown == ["pause"]
        assert not (tmp_path / "control" / "checkpoint").exists(), "acted on, then removed"
        (tmp_path / "control" / "pause").write_text("again\n")
        time.sleep(0.1)  # two polls of the polling observer; native events come at once
        assert watcher.pending()[1] == [], "reported once"
    finally:
        watcher.stop()
