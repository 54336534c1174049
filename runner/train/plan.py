"""The resume plan: which checkpoints to try, newest first. Pure.

The state file and the folder listing can each be behind: a state update
that never reached Drive (F10) leaves a newer committed folder unrecorded; a
stale listing on a fresh runtime (F11) hides a folder the state names. The
plan takes the union, newest first; the caller verifies each in turn and
takes the first that verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from colabrun.state.checkpoints import parse_checkpoint_name
from colabrun.state.model import CheckpointRecord


@dataclass(frozen=True)
class ResumePlan:
    """Checkpoint names to try, newest first; empty means a fresh start."""

    candidates: tuple[str, ...]

    @property
    def is_fresh_start(self) -> bool:
        """No checkpoint exists to resume from."""
        return not self.candidates


def plan_resume(records: Sequence[CheckpointRecord], listed: Sequence[str]) -> ResumePlan:
    """Order every known checkpoint newest first.

    Args:
        records: the checkpoints the state file names.
        listed: checkpoint folder names found by listing the folder.

    Returns:
        The plan; names that do not parse as checkpoint names are left out.
    """
    names = {r.name for r in records} | set(listed)
    keyed = [(parse_checkpoint_name(n), n) for n in names]
    ordered = sorted(((key, n) for key, n in keyed if key is not None), reverse=True)
    return ResumePlan(candidates=tuple(n for _, n in ordered))
