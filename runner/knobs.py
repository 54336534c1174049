"""Debug and test knobs: the only place colabrun reads environment variables.

``COLABRUN_KILL_AT=POINT[@TIER][:N][,POINT[@TIER][:N]...]``
    SIGKILL the training process the N-th time (default 1st) it passes the named
    point (``step``, ``batch``, ``epoch.end``, or a save/state/rotation point, see
    ``colabrun.runner.faults.ALL_POINTS``). Used by the crash tests and by users
    testing their own training code. The i-th entry applies to the i-th worker
    of a session: a supervised job is killed once per entry and restarted.
    ``@root`` counts only the passes of the upload to the root (the uploader's
    threads: the upload, the root's rotation, the state write after it); ``@local``
    only the others (the local save and its rotation, the loop).

``COLABRUN_KILL_LOG=FILE``
    Before a ``COLABRUN_KILL_AT`` kill, append the point, step, time, thread and
    pid to FILE (``colabrun chaos`` measures the work each kill cost with it).

``COLABRUN_KILL_HOW=kill|stop``
    ``kill`` (the default): SIGKILL the process. ``stop``: note the point in
    ``COLABRUN_KILL_LOG`` (required), then SIGSTOP the process, so that nothing
    more happens in it: a harness watching that file kills the whole simulated
    runtime at that moment (the soak, ``benchmarks/soak.py``).

``COLABRUN_KILL_PROCESS=P``
    Which worker process of a group ``COLABRUN_KILL_AT`` kills or stops: ``0``, the
    leader (the default), or a follower's index (``distributed.processes`` above 1). The
    other processes of the group run without a hook.

``COLABRUN_CONTROL_POLLING=1``
    Watch ``control/`` with the polling observer even on a local disk (what
    a Drive mount gets), to test it.

``COLABRUN_TIME_SCALE=S``
    Compress runtime budgets and margins S-fold (a 12 h budget with S=3600
    lasts 12 s), to test the deadline save.

``COLABRUN_RUNTIME_STARTED_AT=T``
    Take Unix time T as this runtime's start instead of detecting it.

``COLABRUN_REPORTS=0``
    Write no TensorBoard event files and no ``reports/metrics.png`` as metrics reach the
    root (the test suite sets it: importing matplotlib and tensorboard in every worker
    would cost it minutes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class KillEntry(NamedTuple):
    """One entry of ``COLABRUN_KILL_AT``: a point, its pass to die at, and the tier
    whose passes count (``None``: every pass)."""

    point: str
    nth: int
    tier: str | None


def kill_at() -> list[KillEntry]:
    """The entries of ``COLABRUN_KILL_AT``, one per worker attempt.

    Raises:
        ValueError: an ``N`` that is not an integer.
    """
    value = os.environ.get("COLABRUN_KILL_AT", "").strip()
    entries = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        where, _, nth = item.partition(":")
        point, _, tier = where.partition("@")
        entries.append(KillEntry(point, int(nth or 1), tier or None))
    return entries


def kill_how() -> str:
    """``COLABRUN_KILL_HOW``: ``kill`` (the default) or ``stop``, as written (checked by
    the fault module)."""
    return os.environ.get("COLABRUN_KILL_HOW", "").strip() or "kill"


def kill_process() -> int:
    """``COLABRUN_KILL_PROCESS``: the index of the worker process the kill hooks are for
    (0, the leader, by default).

    Raises:
        ValueError: a value that is not a whole number of 0 or more.
    """
    value = os.environ.get("COLABRUN_KILL_PROCESS", "").strip() or "0"
    process = int(value)
    if process < 0:
        raise ValueError(f"{value!r} is below 0")
    return process


def control_polling() -> bool:
    """Whether ``COLABRUN_CONTROL_POLLING`` forces the polling observer."""
    return os.environ.get("COLABRUN_CONTROL_POLLING", "") not in ("", "0")


def time_scale() -> float:
    """The ``COLABRUN_TIME_SCALE`` factor (1: real time)."""
    return float(os.environ.get("COLABRUN_TIME_SCALE", "1") or 1)


def runtime_started_at() -> float | None:
    """The ``COLABRUN_RUNTIME_STARTED_AT`` override, if set."""
    value = os.environ.get("COLABRUN_RUNTIME_STARTED_AT", "").strip()
    return float(value) if value else None


def kill_log() -> Path | None:
    """``COLABRUN_KILL_LOG``: where a kill hook notes its point and step before dying."""
    value = os.environ.get("COLABRUN_KILL_LOG", "").strip()
    return Path(value) if value else None


def reports() -> bool:
    """Whether metrics also go to TensorBoard and the plot (``COLABRUN_REPORTS``, default on)."""
    return os.environ.get("COLABRUN_REPORTS", "1").strip() != "0"
