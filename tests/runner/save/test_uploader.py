"""The uploader's rounds, driven one :meth:`Uploader.tick` at a time on a fake clock:
pacing, replacement, retries, hurrying, heartbeats; then its thread, briefly.

No test here sleeps: time moves when the test advances the :class:`FakeClock`.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

import pytest

from colabrun.jobs.errors import StorageError
from colabrun.runner.clock import FakeClock
from colabrun.runner.save.pace import UploadPace
from colabrun.runner.save.uploader import Uploader, UploadOutcome
from colabrun.state.lease import LeaseLost


class Root:
    """Stands for the root: records uploads; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.uploaded: list[str] = []
        self.failing: BaseException | None = None
        self.failures: list[BaseException] = []
        self.recoveries = 0

    def upload(self, name: str) -> None:
        if self.failing is not None:
            raise self.failing
        self.uploaded.append(name)


class FixedRest(UploadPace):
    """A pace whose rest after every upload is ``rest``."""

    def __init__(self, rest: float) -> None:
        super().__init__()
        self.rest = rest

    def rest_s(self, upload_s: float) -> float:
        return self.rest


def uploader(root: Root, clock: FakeClock, *, rest_s: float = 0.0, retry_s: float = 15.0,
             heartbeat: Callable[[], None] | None = None,
             pace: UploadPace | None = None) -> Uploader:
    """An uploader whose thread is not started: the test ticks it."""
    return Uploader(root.upload, on_failure=root.failures.append,
                    on_recovery=lambda: setattr(root, "recoveries", root.recoveries + 1),
                    clock=clock, retry_s=retry_s, heartbeat=heartbeat,
                    pace=pace or FixedRest(rest_s))


def test_nothing_pending_is_idle() -> None:
    up = uploader(Root(), FakeClock())
    assert up.tick() is UploadOutcome.IDLE and up.wait_idle(0.0)


def test_uploads_run_back_to_back_when_they_slow_nothing() -> None:
    """Durable first: steps as fast during an upload as without one, so the next upload
    starts once the previous ends (after the few clean steps that keep it measured)."""
    root, clock = Root(), FakeClock()
    up = uploader(root, clock, pace=UploadPace())
    for _ in range(10):
        up.observe_step(0.03, writing=False)
    up.submit("a")
    assert up.tick() is UploadOutcome.UPLOADED
    up.submit("b")
    clock.advance(3 * 0.03)
    assert up.tick() is UploadOutcome.UPLOADED and root.uploaded == ["a", "b"]


def test_an_upload_that_slows_training_rests_the_next() -> None:
    """Steps 20% slower during a 10 s upload lose 1.67 s; at a 1% budget the next upload
    waits until 167 s after this one began, on the fake clock."""
    root, clock = Root(), FakeClock()
    up = uploader(root, clock, pace=UploadPace(budget=0.01))
    for _ in range(10):
        up.observe_step(0.1, writing=False)

    def slow_upload(name: str) -> None:
        for _ in range(83):  # 10 s of steps at 0.12 s, each observed mid-upload
            clock.advance(0.12)
            up.observe_step(0.12, writing=False)
        root.uploaded.append(name)

    up._upload = slow_upload
    up.submit("a")
    assert up.tick() is UploadOutcome.UPLOADED
    rest = up.pace.toll_s / 0.01 - 83 * 0.12
    assert up.pace.toll_s == pytest.approx(83 * 0.02)
    up.submit("b")
    clock.advance(rest - 0.5)
    assert up.tick() is UploadOutcome.PACED
    clock.advance(1.0)
    assert up.tick() is UploadOutcome.UPLOADED


def test_a_newer_submission_replaces_the_one_waiting() -> None:
    root, clock = Root(), FakeClock()
    up = uploader(root, clock, rest_s=100.0)
    up.submit("a")
    up.tick()
    for name in ("b", "c", "d"):
        up.submit(name)
        assert up.tick() is UploadOutcome.PACED
    clock.advance(100.0)
    assert up.tick() is UploadOutcome.UPLOADED and root.uploaded == ["a", "d"]


def test_hurrying_uploads_at_once_what_is_paced() -> None:
    root, clock = Root(), FakeClock()
    up = uploader(root, clock, rest_s=500.0)
    up.submit("a")
    up.tick()
    up.submit("b")
    assert up.tick() is UploadOutcome.PACED
    up.hurry()
    assert up.tick() is UploadOutcome.UPLOADED and root.uploaded == ["a", "b"]


def test_a_failed_upload_is_retried_unpaced_and_the_recovery_told() -> None:
    root, clock = Root(), FakeClock()
    up = uploader(root, clock, rest_s=100.0)
    root.failing = StorageError("Drive is gone")
    up.submit("a")
    assert up.tick() is UploadOutcome.FAILED and up.failing and up.failures == 1
    assert up.tick() is UploadOutcome.FAILED and up.failures == 2
    assert [str(e) for e in root.failures] == ["Drive is gone"] * 2, "each told, as data"
    assert not up.wait_idle(0.0), "failing: not durable"
    root.failing = None
    assert up.tick() is UploadOutcome.UPLOADED, "a retry is not paced"
    assert root.uploaded == ["a"] and root.recoveries == 1
    assert not up.failing and up.failures == 0


def test_a_newer_checkpoint_replaces_the_failed_one_in_the_retry() -> None:
    root = Root()
    up = uploader(root, FakeClock())
    root.failing = OSError(errno.EIO, "I/O error")
    up.submit("a")
    up.tick()
    up.submit("b")
    root.failing = None
    up.tick()
    assert root.uploaded == ["b"]


@pytest.mark.parametrize("error", [LeaseLost("taken over"), RuntimeError("a bug")])
def test_a_lost_lease_or_a_bug_stops_it_for_good(error: BaseException) -> None:
    root = Root()
    up = uploader(root, FakeClock())
    root.failing = error
    up.submit("a")
    assert up.tick() is UploadOutcome.STOPPED
    assert up.fatal is error and root.failures == []
    assert not up.wait_idle(10.0), "a fatal error ends the wait at once"


def test_a_heartbeat_asked_for_is_written_at_the_next_round() -> None:
    beats: list[int] = []
    up = uploader(Root(), FakeClock(), heartbeat=lambda: beats.append(1))
    assert up.tick() is UploadOutcome.IDLE and beats == []
    up.beat()
    up.tick()
    up.tick()
    assert beats == [1], "one beat per request"


def test_a_heartbeat_that_finds_the_lease_lost_stops_it() -> None:
    def lost() -> None:
        raise LeaseLost("another runner holds the job")

    root = Root()
    up = uploader(root, FakeClock(), heartbeat=lost)
    up.beat()
    up.submit("a")
    assert up.tick() is UploadOutcome.STOPPED and isinstance(up.fatal, LeaseLost)
    assert root.uploaded == [], "nothing uploaded once the lease is lost"


class RacingClock(FakeClock):
    """A fake clock that moves 10 s each time it is read: hours pass in a few reads."""

    def monotonic(self) -> float:
        self.advance(10.0)
        return super().monotonic()


def test_the_wait_times_out_on_the_injected_clock() -> None:
    """A hung upload: ``wait_idle`` gives up when the clock passes its deadline, on
    the injected clock, not after 1000 s of real time."""
    release, reached = threading.Event(), threading.Event()

    def hang(name: str) -> None:
        reached.set()
        release.wait(10)

    up = Uploader(hang, on_failure=lambda e: None, on_recovery=lambda: None,
                  clock=RacingClock())
    up.start()
    try:
        up.submit("a")
        assert reached.wait(10)
        assert up.wait_idle(1000.0) is False
        assert up.current == "a", "still hung"
    finally:
        release.set()
        up.stop()


def test_the_thread_uploads_what_is_submitted_and_stops() -> None:
    root = Root()
    up = uploader(root, FakeClock())
    up.start()
    try:
        up.submit("a")
        assert up.wait_idle(10.0) and root.uploaded == ["a"]
    finally:
        up.stop()


def test_ready_for_the_next_save_only_once_the_last_upload_ended_and_rested() -> None:
    """The adaptive cadence saves when :attr:`Uploader.ready`: a save before that would wait,
    and be replaced by a newer one before it ever reached the root."""
    clock, root = FakeClock(), Root()
    up = uploader(root, clock, rest_s=5.0)
    assert up.ready, "nothing uploaded yet: ready"
    up.submit("a")
    assert not up.ready, "one waiting"
    assert up.tick() is UploadOutcome.UPLOADED and root.uploaded == ["a"]
    assert not up.ready, "resting after it"
    clock.advance(4.9)
    assert not up.ready
    clock.advance(0.1)
    assert up.ready, "rested"
    up.hurry()
    up.submit("b")
    assert up.tick() is UploadOutcome.UPLOADED
    assert up.ready, "a session's end: no rest"


def test_ready_while_the_root_fails_so_local_saves_go_on() -> None:
    clock, root = FakeClock(), Root()
    up = uploader(root, clock)
    root.failing = StorageError("Drive is gone")
    up.submit("a")
    assert up.tick() is UploadOutcome.FAILED and up.failing
    assert up.ready, "nothing to wait for while the root is away"


class CopyingRoot(Root):
    """A root whose upload stops between the checkpoint's commit and its record, where the
    test looks at the uploader (``during``), as the saver's upload tells it (``copied``)."""

    def __init__(self, during: Callable[[], None]) -> None:
        super().__init__()
        self.during = during
        self.up: Uploader | None = None

    def upload(self, name: str) -> None:
        assert self.up is not None
        self.during()  # copying: not committed under the root yet
        self.up.copied()
        self.uploaded.append(name)
        self.during()  # recording it in state.json, rotating


def test_the_next_save_may_start_once_the_upload_is_committed_under_the_root() -> None:
    """Issue 19: the next save's local write overlaps the record and rotation of the
    upload before it, so its own upload starts as that one ends."""
    seen: list[bool] = []
    clock = FakeClock()
    root = CopyingRoot(lambda: seen.append(up.ready))
    up = uploader(root, clock, pace=UploadPace(budget=0.02))
    root.up = up
    for _ in range(5):
        up.pace.observe_step(0.03, uploading=False)  # clean steps: no probe due
    up.submit("a")
    assert up.tick() is UploadOutcome.UPLOADED
    assert seen == [False, True], "not while copying; once committed under the root"
    up.submit("b")  # the save taken then: committed locally as the record ended
    assert not up.ready, "one waiting"
    assert up.tick() is UploadOutcome.UPLOADED and root.uploaded == ["a", "b"]


def test_an_upload_due_a_probe_of_clean_steps_holds_the_next_save_back() -> None:
    seen: list[bool] = []
    clock = FakeClock()
    root = CopyingRoot(lambda: seen.append(up.ready))
    up = uploader(root, clock, pace=UploadPace(budget=0.02))
    root.up = up
    up.pace.observe_step(0.03, uploading=True)  # no clean step seen: a probe is due
    up.submit("a")
    assert up.tick() is UploadOutcome.UPLOADED
    assert seen == [False, False]
    assert not up.ready, "resting for the probe"
    clock.advance(0.09)
    assert up.ready
