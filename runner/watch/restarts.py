"""When the supervisor restarts a worker, and when it gives up. Pure.

A worker that died (crash, kill, hang, CUDA OOM) is restarted from the last
checkpoint. Restarts that make no progress, no new committed checkpoint,
are counted; past the spec's cap the job fails, because retrying a worker
that dies at the same step forever only burns the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Exit(str, Enum):
    """How a worker attempt ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"          # clean stop: request, interrupt, deadline
    CRASHED = "crashed"          # non-zero exit or killed by a signal
    HUNG = "hung"                # killed by the watchdog after a stall
    OOM = "oom"                  # torch.cuda.OutOfMemoryError
    FAILED = "failed"            # the training code raised: a bug, not a fault
    FENCED = "fenced"            # another runner took over


@dataclass(frozen=True)
class Attempt:
    """One worker's run: how it ended and whether it committed a new checkpoint."""

    exit: Exit
    progressed: bool
    detail: str = ""


RESTARTABLE = frozenset({Exit.CRASHED, Exit.HUNG, Exit.OOM})


def attempts_without_progress(history: Sequence[Attempt]) -> int:
    """Restartable attempts since the last one that committed a checkpoint."""
    count = 0
    for attempt in reversed(history):
        if attempt.progressed:
            break
        count += 1
    return count


def should_restart(history: Sequence[Attempt], *, cap: int) -> bool:
    """Whether to start another worker after ``history``'s last attempt."""
    if not history or history[-1].exit not in RESTARTABLE:
        return False
    return attempts_without_progress(history) <= cap


def backoff_s(history: Sequence[Attempt], *, base_s: float = 1.0, max_s: float = 60.0
              ) -> float:
    """Exponential wait before the next start, reset by progress."""
    misses = attempts_without_progress(history)
    return 0.0 if misses == 0 else min(max_s, base_s * 2 ** (misses - 1))


def stall_timeout_s(*, step_s: float | None, longest_gap_s: float | None, factor: float,
                    floor_s: float) -> float:
    """How long the loop may go without progress before it counts as hung.

    Learned from the job: ``factor`` times the larger of the typical step and
    the longest gap seen between two progress events (an evaluation between
    epochs, say), never below ``floor_s``. Saves and loads are exempt: the
    caller does not count time spent in them.
    """
    learned = max(step_s or 0.0, longest_gap_s or 0.0) * factor
    return max(floor_s, learned)
