"""The resume plan: which checkpoints to try, newest first, root and local. Pure.

The state file and the folder listing can each be behind: a state update
that never reached Drive (F10) leaves a newer committed folder unrecorded; a
stale listing on a fresh runtime (F11) hides a folder the state names. The
plan takes the union, newest first. The local staging folder may hold a newer
checkpoint still (committed, never uploaded), and is faster to read: on a tie,
its copy is tried first. The caller verifies each in turn and takes the first
that verifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from colabrun.state.checkpoints import parse_checkpoint_name
from colabrun.state.model import CheckpointRecord

Source = Literal["root", "local"]


@dataclass(frozen=True)
class Attempt:
    """One checkpoint to try: its name, and which store holds it."""

    name: str
    source: Source


@dataclass(frozen=True)
class ResumePlan:
    """Checkpoints to try, newest first; none means a fresh start.

    Args:
        candidates: the root's names (on record or listed), newest first.
        attempts: the root's and the local ones, newest first; on a tie
            (same step and generation) the local copies first.
    """

    candidates: tuple[str, ...]
    attempts: tuple[Attempt, ...] = ()

    @property
    def is_fresh_start(self) -> bool:
        """No checkpoint exists to resume from."""
        return not self.candidates and not self.attempts


def plan_resume(records: Sequence[CheckpointRecord], listed: Sequence[str],
                local: Iterable[str] = ()) -> ResumePlan:
    """Order every known checkpoint newest first.

    Args:
        records: the checkpoints the state file names.
        listed: checkpoint folder names found by listing the root's folder.
        local: checkpoint names found in the local staging folder.

    Returns:
        The plan; names that do not parse as checkpoint names are left out.
    """
    root = _newest_first({r.name for r in records} | set(listed))
    keyed = [(_tie_key(name, is_local=False), Attempt(name, "root")) for name in root]
    keyed += [(_tie_key(name, is_local=True), Attempt(name, "local"))
              for name in local if parse_checkpoint_name(name) is not None]
    keyed.sort(key=lambda item: item[0], reverse=True)
    return ResumePlan(candidates=tuple(root), attempts=tuple(a for _, a in keyed))


def _newest_first(names: Iterable[str]) -> list[str]:
    keyed = [(parse_checkpoint_name(n), n) for n in set(names)]
    return [n for key, n in sorted(((k, n) for k, n in keyed if k is not None), reverse=True)]


def _tie_key(name: str, *, is_local: bool) -> tuple[int, int, int, int]:
    """Step, generation, then the local copy, then the retry: the order attempts take."""
    key = parse_checkpoint_name(name)
    assert key is not None
    step, generation, retry = key
    return (step, generation, int(is_local), retry)
