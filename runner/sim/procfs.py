"""What ``/proc`` says about a simulated runtime's processes, and signals sent to them.

Every reader is quiet about a process that is gone: a runtime's processes may die at any
moment, which is what the simulator is for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def pid_namespace(pid: int) -> str | None:
    """The PID namespace of process ``pid`` (``pid:[4026532...]``), ``None`` when gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_pids(namespace: str) -> list[int]:
    """The host pids of every process in the PID namespace ``namespace``, sorted."""
    return sorted(int(entry) for entry in os.listdir("/proc")
                  if entry.isdigit() and pid_namespace(int(entry)) == namespace)


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``R``, ``S``, ``T``...; ``X`` when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rpartition(")")[2].split()[0]  # the name, in parentheses, may hold spaces


def children(pid: int) -> list[int]:
    """The pids of the children of single-threaded process ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return sorted(int(p) for p in text.split())
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def send(pid: int, sig: int) -> bool:
    """``os.kill``, quiet when the process is gone; whether it was sent."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_all(pids: Callable[[], list[int]], *, timeout_s: float) -> list[int]:
    """SIGSTOP every process ``pids()`` lists, again and again (new ones too) until each is
    stopped, or ``timeout_s`` passed (a process stuck in the kernel stops on leaving it).

    Returns:
        the processes still not stopped: none when all were.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        running = [p for p in pids() if process_state(p) not in "TtZX"]
        if not running or time.monotonic() > deadline:
            return running
        for pid in running:
            send(pid, signal.SIGSTOP)
        time.sleep(0.001)
