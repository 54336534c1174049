"""The soak's plan and tally: which death each runtime dies, and what the deaths cost.

Pure functions over values, no runtime and no disk (:mod:`benchmarks.soak` runs them). A
death is either at a named point (:data:`colabrun.runner.faults.ALL_POINTS`), asked for
with ``COLABRUN_KILL_AT=POINT@TIER:N`` and ``COLABRUN_KILL_HOW=stop`` so that the whole
runtime is killed the moment the point is passed, or at a random time. Its *phase* is
what it interrupted: the loop, a local save, an upload to the root, a ``state.json``
write, a rotation, or nothing in particular (a time).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from colabrun.runner.faults import tier_of_thread
from colabrun.state.checkpoints import SAVE_POINTS

#: What a death interrupts, in the order the report lists them.
PHASES = ("mid-step", "save", "upload", "state write", "rotation", "time")
#: The phase of a point death whose point did not come within its time: killed then.
UNREACHED = "time (point not reached)"
#: Every pass a save makes, the local commit's own point included.
SAVE_PASSES = (*SAVE_POINTS, "save.committed")
#: How far after the runtime's first step a time death falls, at most (seconds).
TIME_WINDOW_S = 2.5
#: Root checkpoints needed before a root rotation is asked for: with ``keep_last: 2`` the
#: next upload then rotates (fewer, and the runtime may never rotate the root).
ROOT_ROTATES_FROM = 2


@dataclass(frozen=True)
class Death:
    """How one runtime is to die.

    Attributes:
        phase: the phase asked for (one of :data:`PHASES`).
        point: the fault point, or ``None`` for a death at a time.
        tier: the tier whose passes count (``local`` or ``root``).
        nth: the pass of ``point`` to die at.
        after_s: for a time death, seconds after the runtime's first step.
    """

    phase: str
    point: str | None = None
    tier: str = "local"
    nth: int = 1
    after_s: float = 0.0

    @property
    def knob(self) -> str | None:
        """The ``COLABRUN_KILL_AT`` value asking for it (``None``: a time death)."""
        return f"{self.point}@{self.tier}:{self.nth}" if self.point else None

    def describe(self) -> str:
        """One line saying it, to print and to replay it by."""
        if self.point is None:
            return f"{self.phase}: {self.after_s:.2f} s after the first step"
        return f"{self.phase}: COLABRUN_KILL_AT={self.knob}"


def phase_rounds(rng: random.Random) -> Iterator[str]:
    """The phases to ask for, death after death: each round every phase once, shuffled,
    so that any :data:`PHASES`-long run of deaths covers them all."""
    while True:
        order = list(PHASES)
        rng.shuffle(order)
        yield from order


def plan_death(phase: str, rng: random.Random, *, root_checkpoints: int) -> Death:
    """A death of ``phase`` that the next runtime will reach, drawn with ``rng``.

    Args:
        phase: one of :data:`PHASES`.
        rng: the soak's seeded generator.
        root_checkpoints: the committed checkpoints under the root now (a root rotation
            needs :data:`ROOT_ROTATES_FROM` of them).

    Returns:
        The death: counts kept low enough for a runtime living a few seconds.

    Raises:
        ValueError: an unknown phase.
    """
    if phase == "mid-step":
        if rng.random() < 0.2:
            return Death(phase, "epoch.end", "local", rng.randint(1, 4))
        return Death(phase, "step", "local", rng.randint(1, 600))
    if phase == "save":
        return Death(phase, rng.choice(SAVE_PASSES), "local", rng.randint(1, 20))
    if phase == "upload":
        return Death(phase, rng.choice(SAVE_POINTS), "root", rng.randint(1, 2))
    if phase == "state write":
        point = rng.choice(("state.tmp_written", "state.replaced"))
        if rng.random() < 0.25:  # the session's first write, before training
            return Death(phase, point, "local", 1)
        return Death(phase, point, "root", rng.randint(1, 2))  # recording an upload
    if phase == "rotation":
        if root_checkpoints >= ROOT_ROTATES_FROM and rng.random() < 0.5:
            return Death(phase, "rotate.manifest_removed", "root", 1)
        return Death(phase, "rotate.manifest_removed", "local", rng.randint(1, 8))
    if phase == "time":
        return Death(phase, after_s=rng.uniform(0.0, TIME_WINDOW_S))
    raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")


def phase_of(point: str | None, thread: str | None) -> str:
    """The phase a death interrupted, from the kill log's point and thread (``None``:
    killed at a time)."""
    if point is None:
        return "time"
    if point in ("step", "epoch.end"):
        return "mid-step"
    if point.startswith("save."):
        return "upload" if thread and tier_of_thread(thread) == "root" else "save"
    if point.startswith("state."):
        return "state write"
    return "rotation"


@dataclass(frozen=True)
class Tally:
    """What the deaths cost, and what they hit.

    Attributes:
        deaths: runtimes killed.
        per_phase: deaths by the phase they interrupted (:data:`UNREACHED` included).
        lost_mean: durable work lost per death, steps: the step each runtime reached
            minus the step the next one resumed from.
        lost_max: the most lost by one death.
    """

    deaths: int
    per_phase: dict[str, int]
    lost_mean: float
    lost_max: int


def tally(phases: Sequence[str], lost: Sequence[int]) -> Tally:
    """The :class:`Tally` of deaths with these phases and losses (same order)."""
    counts = Counter(phases)
    per_phase = {phase: counts[phase] for phase in (*PHASES, UNREACHED) if counts[phase]}
    return Tally(deaths=len(lost), per_phase=per_phase,
                 lost_mean=statistics.fmean(lost) if lost else 0.0,
                 lost_max=max(lost, default=0))
