"""Fault points: named places in the save protocol and the loop where a test
(or ``COLABRUN_KILL_AT``) can make the process die, as a runtime does (F1).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from jobs.errors import ColabrunError
from runner import knobs
from state.checkpoints import ROTATE_POINTS, SAVE_POINTS
from state.statefile import STATE_WRITE_POINTS

#: Every named point, in the order a save passes them.
LOOP_POINTS = ("step", "epoch.end")
ALL_POINTS: tuple[str, ...] = LOOP_POINTS + SAVE_POINTS + STATE_WRITE_POINTS + ROTATE_POINTS


class FaultSpecError(ColabrunError, ValueError):
    """A fault-injection request (``COLABRUN_KILL_AT``) that names no known point."""

    exit_code = 2


class KillAt:
    """A hook that SIGKILLs this process the ``nth`` time it sees ``point``."""

    def __init__(self, point: str, nth: int = 1) -> None:
        if point not in ALL_POINTS:
            raise FaultSpecError(f"COLABRUN_KILL_AT: unknown fault point {point!r}; known: "
                                 f"{', '.join(ALL_POINTS)}")
        self.point = point
        self.nth = nth
        self.seen = 0

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen >= self.nth:
            os.kill(os.getpid(), signal.SIGKILL)


def hook_from_environment(attempt: int = 0) -> Callable[[str], None] | None:
    """The kill hook ``COLABRUN_KILL_AT`` asks for this worker attempt, if any.

    ``POINT:N,POINT:N,...``: the i-th entry applies to the i-th attempt of a
    session (restarted workers), so a test can kill a worker several times.
    """
    try:
        entries = knobs.kill_at()
    except ValueError as exc:
        raise FaultSpecError(f"COLABRUN_KILL_AT: {exc}; write POINT or POINT:N, "
                             "comma-separated (e.g. step:40,save.renamed:2)") from exc
    if attempt >= len(entries):
        return None
    return KillAt(*entries[attempt])
