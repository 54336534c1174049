"""A worker started ahead of its task (:meth:`WorkerProcess.start`): it imports while the
session waits for the lease; given no task, it is discarded without a trace."""

from __future__ import annotations

import time

import pytest

from colabrun.runner.watch.worker_process import WorkerProcess


def test_a_worker_discarded_before_its_task_is_killed_and_reaped() -> None:
    worker = WorkerProcess.start()
    assert worker.is_running() and not worker.tasked
    worker.discard()
    assert not worker.is_running() and worker.returncode != 0
    worker.discard()  # twice is harmless


@pytest.mark.slow
def test_a_worker_whose_supervisor_closes_the_socket_exits_quietly() -> None:
    """The socket closed before any task (the session ended first): exit 0, no traceback."""
    worker = WorkerProcess.start()
    time.sleep(0.5)  # into its imports
    worker.close()
    worker.process.wait(timeout=120)
    assert worker.returncode == 0
