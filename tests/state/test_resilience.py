"""Retries, timeouts and error translation of one storage call, without a filesystem:
the calls are plain functions that fail on cue."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from colabrun.jobs.errors import StorageError, StorageTimeout
from colabrun.state import resilience
from colabrun.state.resilience import (
    IDLE_NAME,
    TRANSIENT_ERRNOS,
    call_resilient,
    is_transient,
    run_with_timeout,
    translate,
    try_limit_s,
)

PATH = Path("/content/drive/MyDrive/colabrun/job/state.json")


def oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err), str(PATH))


def failing(times: int, err: int = errno.EIO) -> tuple[Callable[[], str], list[int]]:
    """A call that fails ``times`` times with ``err``, then returns ``"done"``."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise oserror(err)
        return "done"

    return fn, calls


def call(fn: Callable[[], str], *, attempts: int = 3, limit_s: float | None = None,
         slept: list[float] | None = None) -> str:
    return call_resilient("read", PATH, fn, attempts=attempts, backoff_s=0.5,
                          sleep=(slept if slept is not None else []).append, limit_s=limit_s)


@pytest.mark.parametrize("err", sorted(TRANSIENT_ERRNOS))
def test_a_flaky_mount_is_transient(err: int) -> None:
    assert is_transient(oserror(err))


@pytest.mark.parametrize("exc", [oserror(errno.ENOENT), oserror(errno.ENOSPC),
                                 oserror(errno.EACCES), RuntimeError("EIO"), TimeoutError()])
def test_a_wrong_path_a_full_disk_or_another_error_is_not(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(("default_s", "own_s", "limit"),
                         [(None, None, None), (None, 5.0, None), (120.0, None, 120.0),
                          (120.0, 5.0, 5.0)])
def test_a_try_is_timed_by_its_own_limit_unless_nothing_is(
    default_s: float | None, own_s: float | None, limit: float | None
) -> None:
    assert try_limit_s(default_s, own_s) == limit


@pytest.mark.parametrize("limit_s", [None, 5.0])
def test_transient_failures_are_retried_with_doubling_waits(limit_s: float | None) -> None:
    fn, calls = failing(2)
    slept: list[float] = []
    assert call(fn, limit_s=limit_s, slept=slept) == "done"
    assert len(calls) == 3
    assert slept == pytest.approx([0.5, 1.0])


def test_the_waits_stop_growing_at_ten_times_the_first() -> None:
    fn, _ = failing(7)
    slept: list[float] = []
    call(fn, attempts=8, slept=slept)
    assert slept == pytest.approx([0.5, 1, 2, 4, 5, 5, 5])


def test_the_last_failure_is_translated_and_chained() -> None:
    fn, calls = failing(99, errno.ENOTCONN)
    with pytest.raises(StorageError) as info:
        call(fn, attempts=3)
    assert len(calls) == 3
    assert "after 3 tries" in str(info.value) and str(PATH) in str(info.value)
    assert info.value.errno == errno.ENOTCONN
    assert isinstance(info.value.__cause__, OSError)


def test_a_storage_error_raised_inside_passes_unchanged() -> None:
    raised = StorageError("already told")

    def fn() -> str:
        raise raised

    with pytest.raises(StorageError) as info:
        call(fn)
    assert info.value is raised


def test_an_untimed_call_runs_in_the_callers_thread() -> None:
    seen: list[tuple[threading.Thread, str]] = []

    def fn() -> str:
        seen.append((threading.current_thread(), threading.current_thread().name))
        return "done"

    call(fn, limit_s=None)
    call(fn, limit_s=5.0)
    assert seen[0][0] is threading.current_thread()
    assert seen[1][0] is not threading.current_thread() and seen[1][1] == "colabrun-io-read"


def test_a_timed_call_reuses_an_idle_lane_and_never_a_stuck_one() -> None:
    """A thread per call cost ~55 us of CPU; a lane kept between calls ~20 us."""
    ran_in: list[threading.Thread] = []

    def fn() -> None:
        ran_in.append(threading.current_thread())

    run_with_timeout("stat", PATH, fn, 5.0)
    run_with_timeout("stat", PATH, fn, 5.0)
    assert ran_in[0] is ran_in[1], "the idle lane took the second call"
    assert ran_in[0].name == IDLE_NAME and ran_in[0].is_alive()
    release = threading.Event()
    try:
        with pytest.raises(StorageTimeout):  # in the idle lane, which stays stuck
            run_with_timeout("stat", PATH, lambda: release.wait(10), 0.05)
        assert ran_in[0].name == "colabrun-io-stat" and ran_in[0].is_alive()
        run_with_timeout("read", PATH, fn, 5.0)
        assert ran_in[2] is not ran_in[0], "a stuck lane is never handed a call again"
    finally:
        release.set()
    ran_in[0].join(timeout=5.0)
    assert not ran_in[0].is_alive(), "an abandoned lane ends once its call does"


def test_the_first_try_that_succeeds_builds_no_retry_machinery(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(resilience, "Retrying", lambda **kw: built.append(kw))
    assert call(lambda: "done", limit_s=5.0) == "done"
    assert built == []


def test_a_timed_call_hands_back_its_error() -> None:
    raised_in: list[str] = []

    def fn() -> str:
        raised_in.append(threading.current_thread().name)
        raise ValueError("the call's own error")

    with pytest.raises(ValueError, match="the call's own error"):
        run_with_timeout("stat", PATH, fn, 5.0)
    assert raised_in == ["colabrun-io-stat"]


def test_a_hanging_call_times_out_and_says_what_to_check() -> None:
    release = threading.Event()
    try:
        with pytest.raises(StorageTimeout) as info:
            run_with_timeout("stat", PATH, lambda: release.wait(10), 0.05)
    finally:
        release.set()
    message = str(info.value)
    assert f"stat {PATH} did not finish within 0.05 s" in message
    assert "ls /content/drive/MyDrive" in message


@pytest.mark.parametrize(("err", "hint"), [
    (errno.ENOTCONN, "remount Drive"),
    (errno.EIO, "remount Drive"),
    (errno.ENOSPC, "empty the Trash"),
    (errno.EACCES, "--root"),
    (errno.EROFS, "--root"),
    (errno.ENOENT, "check the path"),
])
def test_each_error_gets_its_hint_and_only_transient_ones_their_tries(err: int,
                                                                      hint: str) -> None:
    error = translate("write", PATH, oserror(err), tries=4)
    assert str(error).startswith(f"cannot write {PATH}: {os.strerror(err)}")
    assert hint in str(error)
    assert ("(after 4 tries)" in str(error)) == (err in TRANSIENT_ERRNOS)
    assert error.errno == err
