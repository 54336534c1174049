"""What ``/proc`` says about processes, read for a real child of this one (no namespaces,
no root: only Linux's ``/proc``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colabrun.runner.sim.procfs import (
    children,
    namespace_pids,
    pid_namespace,
    process_state,
    send,
    stop_all,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_child_is_seen_stopped_and_gone() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in children(os.getpid())
        namespace = pid_namespace(os.getpid())
        assert namespace is not None and pid_namespace(child.pid) == namespace
        assert {os.getpid(), child.pid} <= set(namespace_pids(namespace))
        assert send(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5.0
        while process_state(child.pid) not in "Tt":  # the stop lands asynchronously
            assert time.monotonic() < deadline, process_state(child.pid)
        assert send(child.pid, signal.SIGCONT)
    finally:
        child.kill()
        child.wait()
    assert child.pid not in children(os.getpid())


def test_a_process_that_is_gone_reads_as_gone() -> None:
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it
    assert process_state(gone) == "X" and pid_namespace(gone) is None
    assert children(gone) == [] and not send(gone, signal.SIGTERM)


def test_stop_all_stops_what_it_is_given_or_says_what_still_runs() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert stop_all(lambda: [child.pid], timeout_s=-1.0) == [child.pid]  # no time left
        assert process_state(child.pid) not in "Tt"
        assert stop_all(lambda: [child.pid], timeout_s=5.0) == []
        assert process_state(child.pid) in "Tt"
    finally:
        child.kill()
        child.wait()
