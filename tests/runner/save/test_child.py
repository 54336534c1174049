"""The conversation between a writer child and its parent, over a real
``multiprocessing.Pipe`` in one process (both ends here, no fork); then reaping a real
child on a fake clock.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import pytest

from colabrun.jobs.errors import CheckpointError
from colabrun.runner.clock import FakeClock
from colabrun.runner.save.child import (
    ChildSide,
    Done,
    Failed,
    Point,
    become_writer,
    converse,
    died,
    fork_child,
    reap,
)
from colabrun.runner.save.task import fork_available
from colabrun.state.manifest import PAYLOAD_NAME, Manifest, ManifestFile

needs_fork = pytest.mark.skipif(not fork_available(), reason="writer children are Linux-only")


@pytest.fixture
def ends() -> Iterator[tuple[Connection, Connection]]:
    """(the parent's end, the child's end)."""
    parent, child = Pipe()
    yield parent, child
    parent.close()
    child.close()


def manifest() -> Manifest:
    return Manifest(name="step-000000001-g0001", step=1, epoch=0, batch=1, generation=1,
                    created_at=0.0, meta={"reason": "test"},
                    files=(ManifestFile(path=PAYLOAD_NAME, size_bytes=3, sha256="0" * 64),))


def test_each_point_runs_the_hook_in_order_and_the_child_goes_on(
    ends: tuple[Connection, Connection]
) -> None:
    parent, child = ends
    for name in ("save.folder_created", "save.renamed"):
        child.send(Point(name))
    child.send(Done(manifest(), 0.25))
    seen: list[str] = []
    report = converse(parent, seen.append)
    assert report == Done(manifest(), 0.25)
    assert seen == ["save.folder_created", "save.renamed"]
    assert [child.recv(), child.recv()] == [True, True], "one answer per point"


def test_a_hook_that_raises_fails_the_save_and_stops_the_child(
    ends: tuple[Connection, Connection]
) -> None:
    parent, child = ends
    child.send(Point("save.payload_written"))
    child.send(Point("save.renamed"))  # never served: the save is over

    def hook(point: str) -> None:
        raise OSError(5, "injected")

    report = converse(parent, hook)
    assert isinstance(report, Failed) and str(report.error) == "[Errno 5] injected"
    assert child.recv() is False, "told to stop"
    assert not child.poll(0), "nothing more"


def test_a_child_that_dies_ends_the_conversation(ends: tuple[Connection, Connection]) -> None:
    parent, child = ends
    child.send(Point("save.folder_created"))
    child.close()  # its end of the pipe closes with it
    assert converse(parent, lambda point: None) is None


def test_a_childs_error_is_reported_as_it_is_when_it_pickles(
    ends: tuple[Connection, Connection]
) -> None:
    parent, child = ends
    ChildSide(child).failed(ValueError("this object refuses to be pickled"))
    report = converse(parent, lambda point: None)
    assert isinstance(report, Failed) and isinstance(report.error, ValueError)
    assert str(report.error) == "this object refuses to be pickled"


class _Unpicklable(Exception):
    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("no pickling")


def test_an_error_that_cannot_travel_is_named_in_a_checkpoint_error(
    ends: tuple[Connection, Connection]
) -> None:
    parent, child = ends
    ChildSide(child).failed(_Unpicklable("odd"))
    report = converse(parent, lambda point: None)
    assert isinstance(report, Failed) and isinstance(report.error, CheckpointError)
    assert "background save failed: _Unpicklable('odd')" in str(report.error)


def test_the_death_of_a_writer_says_the_previous_checkpoint_is_intact() -> None:
    assert str(died(42, 9)) == ("the background writer (pid 42) died (wait status 9) before "
                                "committing; the previous checkpoint is intact")
    assert "(pid 7) died before committing" in str(died(7))


@needs_fork
def test_a_child_that_outlives_the_timeout_is_killed_on_the_injected_clock() -> None:
    """The 5 s a writer process has to exit pass on the fake clock: the test takes
    milliseconds, and the child is SIGKILLed."""
    pid = fork_child()
    if pid == 0:  # a writer that never exits by itself
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    clock = FakeClock()
    started = time.monotonic()
    status, usage = reap(pid, clock=clock, timeout_s=5.0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert usage is not None
    assert clock.monotonic() >= 5.0, "it waited out the timeout, on the fake clock"
    assert time.monotonic() - started < 30, "not on the real one"


@needs_fork
def test_a_child_that_exits_is_reaped_without_waiting_out_the_timeout() -> None:
    pid = fork_child()
    if pid == 0:
        os._exit(3)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # it exited; not reaped yet
    clock = FakeClock()
    status, _ = reap(pid, clock=clock, timeout_s=5.0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert clock.monotonic() == 0.0, "no wait at all"
    assert reap(pid, clock=clock) == (-1, None), "reaped already"


@needs_fork
def test_a_writer_whose_parent_died_before_it_asked_to_die_with_it_exits(
    ends: tuple[Connection, Connection]
) -> None:
    """The race between the fork and PR_SET_PDEATHSIG: a parent that dies in between
    never sends the signal, so the writer sees it has another parent, and exits."""
    ours, theirs = ends
    middle = fork_child()
    if middle == 0:  # the training process: forks its writer, and dies at once
        try:
            parent = os.getpid()
            if fork_child() == 0:  # the writer: asks only once its parent is gone
                try:
                    deadline = time.monotonic() + 30
                    while os.getppid() == parent and time.monotonic() < deadline:
                        time.sleep(0.005)
                    become_writer(parent, theirs)
                    theirs.send("went on")
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(middle, 0)
    theirs.close()  # the writer holds the last copy of its end
    assert ours.poll(60), "the writer neither exited nor went on"
    with pytest.raises(EOFError):
        ours.recv()
