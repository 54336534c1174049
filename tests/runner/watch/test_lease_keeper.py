"""The lease keeper: tier 1 with a FakeClock and a fake store, tier 2 on a real state file
in ``tmp_path`` with one write made to fail (``OSError(EIO)``)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from colabrun.jobs.errors import StorageError
from colabrun.runner.clock import FakeClock
from colabrun.runner.watch.lease_keeper import LeaseKeeper, LeaseReport, Refresh
from colabrun.state.lease import Fence, LeaseLost, Owner, fence_of, take
from colabrun.state.model import JobState
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import new_job

ME = Owner("runtime-a", "vm-a", 100)
RIVAL = Owner("runtime-b", "vm-b", 200)


def leased_statefile(job_dir: Path, clock: FakeClock) -> tuple[StateFile, Fence]:
    """A real state file whose lease ``ME`` holds, and its fence."""
    job_dir.mkdir()
    state = take(new_job(name="j", fingerprint="f", defining={}, epochs_total=1,
                         now=clock.time()), ME, now=clock.time(), duration_s=600.0)
    statefile = StateFile(job_dir, Storage())
    statefile.write(state)
    return statefile, fence_of(state)


def heartbeat_at(statefile: StateFile) -> float:
    state = statefile.read()
    assert state is not None and state.lease is not None
    return state.lease.heartbeat_at


class FlakyStore:
    """A real state file whose next ``failures`` updates fail with ``OSError(EIO)`` (a
    mount that went away), and that tells when an update was tried."""

    def __init__(self, statefile: StateFile, failures: int = 0) -> None:
        self.statefile = statefile
        self.failures = failures
        self.tried = threading.Event()

    def update(self, change: Callable[[JobState], JobState]) -> JobState:
        self.tried.set()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EIO, "Input/output error", str(self.statefile.path))
        return self.statefile.update(change)


def test_a_tick_writes_the_clock_s_wall_time_as_the_heartbeat(tmp_path: Path) -> None:
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    problems: list[LeaseReport] = []
    keeper = LeaseKeeper(statefile, fence, interval_s=150.0, clock=clock,
                         on_problem=problems.append)
    clock.advance(150.0)
    report = keeper.tick()
    assert report == LeaseReport(Refresh.REFRESHED, clock.time())
    assert heartbeat_at(statefile) == clock.time()
    assert problems == [] and keeper.lost is None and keeper.last == report


def test_a_failing_storage_is_reported_as_data_and_the_next_tick_recovers(
        tmp_path: Path) -> None:
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    problems: list[LeaseReport] = []
    keeper = LeaseKeeper(FlakyStore(statefile, failures=1), fence, interval_s=1.0, clock=clock,
                         on_problem=problems.append)
    before = heartbeat_at(statefile)
    clock.advance(10.0)
    failed = keeper.tick()
    assert failed.outcome is Refresh.STORAGE_FAILED and failed.is_problem
    assert isinstance(failed.error, OSError) and failed.error.errno == errno.EIO
    assert problems == [failed] and keeper.lost is None
    assert heartbeat_at(statefile) == before, "nothing was written"
    keeper.raise_if_lost()  # a storage failure is not a lost lease
    clock.advance(10.0)
    assert keeper.tick().outcome is Refresh.REFRESHED
    assert heartbeat_at(statefile) == before + 20.0


def test_a_missing_state_file_is_a_storage_failure_too(tmp_path: Path) -> None:
    clock = FakeClock()
    (tmp_path / "gone").mkdir()
    keeper = LeaseKeeper(StateFile(tmp_path / "gone", Storage()), Fence(1, "t"),
                         interval_s=1.0, clock=clock)
    report = keeper.tick()
    assert report.outcome is Refresh.STORAGE_FAILED
    assert isinstance(report.error, StorageError)


def test_a_takeover_is_lost_for_good_and_nothing_is_written(tmp_path: Path) -> None:
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    theirs = statefile.update(lambda s: take(s, RIVAL, now=clock.time(), duration_s=600.0))
    problems: list[LeaseReport] = []
    keeper = LeaseKeeper(statefile, fence, interval_s=1.0, clock=clock,
                         on_problem=problems.append)
    clock.advance(5.0)
    report = keeper.tick()
    assert report.outcome is Refresh.LOST and isinstance(report.error, LeaseLost)
    assert problems == [report] and keeper.lost is report.error
    assert statefile.read() == theirs, "the new owner's state is untouched"
    with pytest.raises(LeaseLost, match="taken over"):
        keeper.raise_if_lost()


def test_the_thread_refreshes_until_stopped(tmp_path: Path) -> None:
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    store = FlakyStore(statefile)
    clock.advance(30.0)
    with LeaseKeeper(store, fence, interval_s=0.01, clock=clock) as keeper:
        assert store.tried.wait(5.0), "the thread refreshes every interval_s"
    assert not keeper.is_running, "stopped and joined on exit"
    assert heartbeat_at(statefile) == clock.time()


def test_the_thread_ends_by_itself_when_the_lease_is_lost(tmp_path: Path) -> None:
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    statefile.update(lambda s: take(s, RIVAL, now=clock.time(), duration_s=600.0))
    told = threading.Event()
    keeper = LeaseKeeper(statefile, fence, interval_s=0.01, clock=clock,
                         on_problem=lambda report: told.set())
    keeper.start()
    try:
        assert told.wait(5.0), "the loss is reported through the callback"
        keeper._thread.join(5.0)  # not stop(): the thread must end on its own
        assert not keeper.is_running, "nothing more is written after a loss"
    finally:
        keeper.stop()
    assert keeper.last is not None and keeper.last.outcome is Refresh.LOST


def test_a_caller_with_its_own_thread_refreshes_and_stops_at_a_loss(tmp_path: Path) -> None:
    """The saver's way: refresh on the uploader's thread, which stops at LeaseLost."""
    clock = FakeClock()
    statefile, fence = leased_statefile(tmp_path / "j", clock)
    problems: list[LeaseReport] = []
    keeper = LeaseKeeper(FlakyStore(statefile, failures=1), fence, interval_s=60.0,
                         clock=clock, on_problem=problems.append)
    clock.advance(60.0)
    keeper.refresh()  # the mount fails: reported, not raised, and training goes on
    assert [p.outcome for p in problems] == [Refresh.STORAGE_FAILED]
    clock.advance(60.0)
    keeper.refresh()
    assert heartbeat_at(statefile) == clock.time()
    statefile.update(lambda s: take(s, RIVAL, now=clock.time(), duration_s=600.0))
    with pytest.raises(LeaseLost):
        keeper.refresh()
    assert [p.outcome for p in problems] == [Refresh.STORAGE_FAILED, Refresh.LOST]
