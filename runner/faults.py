"""Fault points: named places in the save protocol and the loop where a test
(or ``COLABRUN_KILL_AT``) can make the process die, as a runtime does (F1).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from runner import knobs
from state.checkpoints import ROTATE_POINTS, SAVE_POINTS
from state.statefile import STATE_WRITE_POINTS

#: Every named point, in the order a save passes them.
LOOP_POINTS = ("step", "epoch.end")
ALL_POINTS: tuple[str, ...] = LOOP_POINTS + SAVE_POINTS + STATE_WRITE_POINTS + ROTATE_POINTS


class KillAt:
    """A hook that SIGKILLs this process the ``nth`` time it sees ``point``."""

    def __init__(self, point: str, nth: int = 1) -> None:
        if point not in ALL_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(ALL_POINTS)}")
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
    entries = knobs.kill_at()
    if attempt >= len(entries):
        return None
    return KillAt(*entries[attempt])
