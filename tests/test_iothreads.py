"""The pooled threads timed storage calls run in (state/iothreads.py)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from state.iothreads import POOL, IoThreads


def test_calls_in_a_row_reuse_one_thread() -> None:
    pool = IoThreads(idle_s=0.1)
    first = pool.run(threading.get_ident, 5.0)
    second = pool.run(threading.get_ident, 5.0)
    assert first[0] and second[0]
    assert first[1] == second[1] != threading.get_ident()


def test_an_error_is_handed_back_and_the_thread_serves_on() -> None:
    pool = IoThreads(idle_s=0.1)

    def fail() -> None:
        raise OSError(5, "EIO")

    finished, value, error = pool.run(fail, 5.0)
    assert finished and value is None and isinstance(error, OSError)
    assert pool.run(lambda: 7, 5.0) == (True, 7, None)


def test_a_hung_call_keeps_its_thread_and_the_next_call_gets_another() -> None:
    pool = IoThreads(idle_s=0.05)
    release = threading.Event()
    hung: list[int] = []

    def hang() -> None:
        hung.append(threading.get_ident())
        release.wait(10.0)

    assert pool.run(hang, 0.05) == (False, None, None)
    finished, ident, _ = pool.run(threading.get_ident, 5.0)
    assert finished and ident != hung[0]  # not queued behind the hung call
    release.set()


def test_idle_threads_end() -> None:
    pool = IoThreads(idle_s=0.05)
    before = set(threading.enumerate())
    pool.run(lambda: None, 5.0)
    started = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in started] == ["colabrun-io"]
    started[0].join(2.0)
    assert not started[0].is_alive()
    assert pool.run(lambda: 3, 5.0) == (True, 3, None)  # a new one starts


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="fork")
def test_a_forked_child_starts_its_own_threads() -> None:
    """A writer process forked while a pooled thread is idle must not hand its calls
    to that thread: the child does not have it."""
    POOL.run(lambda: None, 5.0)  # one idle thread now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        finished, value, _ = POOL.run(lambda: 7, 2.0)
        os._exit(0 if finished and value == 7 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
