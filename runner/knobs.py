"""Debug and test knobs: the only place colabrun reads environment variables.

``COLABRUN_KILL_AT=POINT[:N][,POINT[:N]...]``
    SIGKILL the training process the N-th time (default 1st) it passes the named
    point (``step``, ``epoch.end``, or a save/state/rotation point, see
    ``colabrun.runner.faults.ALL_POINTS``). Used by the crash tests and by users
    testing their own training code. The i-th entry applies to the i-th worker
    of a session: a supervised job is killed once per entry and restarted.

``COLABRUN_KILL_LOG=FILE``
    Before a ``COLABRUN_KILL_AT`` kill, append the point and step to FILE
    (``colabrun chaos`` measures the work each kill cost with it).

``COLABRUN_CONTROL_POLLING=1``
    Watch ``control/`` with the polling observer even on a local disk (what
    a Drive mount gets), to test it.

``COLABRUN_TIME_SCALE=S``
    Compress runtime budgets and margins S-fold (a 12 h budget with S=3600
    lasts 12 s), to test the deadline save.

``COLABRUN_RUNTIME_STARTED_AT=T``
    Take Unix time T as this runtime's start instead of detecting it.
"""

from __future__ import annotations

import os
from pathlib import Path


def kill_at() -> list[tuple[str, int]]:
    """The ``(point, occurrence)`` entries of ``COLABRUN_KILL_AT``, one per worker attempt."""
    value = os.environ.get("COLABRUN_KILL_AT", "").strip()
    entries = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, _, nth = item.partition(":")
        entries.append((point, int(nth or 1)))
    return entries


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
