"""Whether a worker is hung: a pure watch over its heartbeats. No processes, no clock.

The supervisor feeds each :class:`~colabrun.runner.watch.messages.Beat` with the
(monotonic) time it arrived and asks :meth:`StallWatch.check` at each poll
(docs/concepts.md#hang-detection). A worker is hung when no beat showed progress (a new
step, epoch or phase) for longer than
``max(stall_floor_s, stall_factor x max(step time, longest gap seen))``; before the first
batch (``setup``) at least ``setup_s``. Saves and loads never count: a beat in, or just out
of, those phases is progress. The longest gap is learned for the whole session, across
restarts; the rest starts afresh with each worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from colabrun.jobs.spec import WatchdogPolicy
from colabrun.runner.watch.messages import Beat, Phase
from colabrun.runner.watch.restarts import stall_timeout_s

#: phases whose time never counts toward a stall
EXEMPT_PHASES: frozenset[Phase] = frozenset({"save", "load"})


@dataclass(frozen=True)
class StallLimits:
    """The spec's watchdog timeouts that decide a stall."""

    factor: float
    floor_s: float
    setup_s: float

    @classmethod
    def of(cls, policy: WatchdogPolicy) -> StallLimits:
        """The limits of a spec's ``watchdog`` section.

        Args:
            policy: the spec's watchdog policy.

        Returns:
            Its stall factor and floor, and the setup allowance.
        """
        return cls(factor=policy.stall_factor, floor_s=policy.stall_floor_s,
                   setup_s=policy.setup_s)


@dataclass(frozen=True)
class Stall:
    """A verdict: the worker looks hung."""

    silent_s: float
    limit_s: float
    phase: Phase
    step: int

    def detail(self) -> str:
        """How the attempt ended, in the user's words (``hung for 21 s at step 30``)."""
        return f"hung for {self.silent_s:.0f} s at step {self.step}"


class StallWatch:
    """What the heartbeats of the current worker showed, and whether it stalled.

    Args:
        limits: the spec's timeouts.
        now: the monotonic time the first worker started.
    """

    def __init__(self, limits: StallLimits, *, now: float) -> None:
        self.limits = limits
        self.longest_gap_s: float | None = None
        self.restart(now=now)

    def restart(self, *, now: float) -> None:
        """A new worker started at ``now``: forget the old one's beats, keep the gap learned.

        Args:
            now: the monotonic time the worker started.
        """
        self.last: Beat | None = None
        self.phase: Phase = "setup"
        self.step_s: float | None = None
        self.last_progress = now

    def observe(self, beat: Beat, *, now: float) -> None:
        """Take one heartbeat that arrived at ``now``.

        Args:
            beat: the worker's progress.
            now: the monotonic time it arrived.
        """
        self.step_s = beat.step_s or self.step_s
        if beat.phase in EXEMPT_PHASES or self.phase in EXEMPT_PHASES:
            self.last_progress = now  # saves and loads never count as a stall
        elif self.last is None or beat.key != self.last.key:
            if self.last is not None and self.phase != "setup":  # setup is not a step gap
                gap = now - self.last_progress
                self.longest_gap_s = max(self.longest_gap_s or 0.0, gap)
            self.last_progress = now
        self.last, self.phase = beat, beat.phase

    def limit_s(self) -> float:
        """How long the worker may go without progress in its current phase."""
        limit = stall_timeout_s(step_s=self.step_s, longest_gap_s=self.longest_gap_s,
                                factor=self.limits.factor, floor_s=self.limits.floor_s)
        if self.phase == "setup":  # loading data and building the model may take long
            limit = max(limit, self.limits.setup_s)
        return limit

    def check(self, *, now: float) -> Stall | None:
        """The verdict at ``now``.

        Args:
            now: the monotonic time.

        Returns:
            A :class:`Stall` when the worker looks hung, else ``None``.
        """
        silent = now - self.last_progress
        limit = self.limit_s()
        if self.phase in EXEMPT_PHASES or silent < limit:
            return None
        step = self.last.step if self.last is not None else 0
        return Stall(silent_s=silent, limit_s=limit, phase=self.phase, step=step)
