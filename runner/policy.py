"""Whether a checkpoint is due: a pure decision over counters and times."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.spec import CheckpointPolicy


def save_due(
    policy: CheckpointPolicy,
    *,
    steps_since_save: int,
    seconds_since_save: float,
    at_epoch_end: bool,
    save_cost_s: float | None = None,
    writer_busy: bool = False,
) -> str | None:
    """The reason a checkpoint is due now, or ``None``.

    Args:
        policy: the spec's checkpoint policy.
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        at_epoch_end: whether this boundary closes an epoch.
        save_cost_s: the measured cost of one save (:attr:`CostMeter.cost_s`);
            ``None`` until one was measured.
        writer_busy: whether the last save is still being written.

    Returns:
        ``"epoch_end"``, ``"every_steps"``, ``"every_s"``, ``"adaptive"`` or ``None``. Within an
        epoch, a boundary with no new step is never due (nothing new to save);
        an epoch end is due even so, since the position moved to the next epoch.
    """
    if steps_since_save <= 0 and not at_epoch_end:
        return None
    if at_epoch_end and policy.at_epoch_end:
        return "epoch_end"
    if policy.every_steps is not None and steps_since_save >= policy.every_steps:
        return "every_steps"
    if policy.every_s is not None and steps_since_save > 0 and (
        seconds_since_save >= policy.every_s
    ):
        return "every_s"
    if policy.max_overhead is not None and steps_since_save > 0 and not writer_busy:
        if save_cost_s is None or seconds_since_save >= adaptive_interval_s(
                policy.max_overhead, save_cost_s):
            return "adaptive"
    return None


def adaptive_interval_s(max_overhead: float, save_cost_s: float) -> float:
    """Seconds between saves that keep their cost at ``max_overhead`` of training time.

    A save costing ``c`` seconds every ``T`` seconds costs ``c / (T + c)`` of the
    time; at most ``m`` when ``T >= c (1 - m) / m``. The adaptive policy saves at
    the first boundary after that, and never while the last save is still being
    written (so the background work stays bounded too). The first save of a
    session is taken at once: it measures the cost.
    """
    return save_cost_s * (1 - max_overhead) / max_overhead


@dataclass
class CostMeter:
    """What a save costs training, measured from the loop itself.

    Two parts: the **stall** (the loop blocked while the snapshot was taken),
    and the **toll** of the background work (serialising, hashing, writing,
    uploading): steps run slower while it is in flight, since it competes for
    the GIL, the cores, the memory bus, and (for a forked writer) copy-on-write
    faults. The toll is the extra time of the steps taken while a save was
    being written: (busy step time - idle step time) x busy steps per save.
    On a machine with a free core it is near zero; on a single busy core it is
    the background work's whole CPU time. Pure: fed with observations.
    """

    alpha: float = 0.2
    stall_s: float | None = None
    idle_step_s: float | None = None
    busy_step_s: float | None = None
    busy_steps_per_save: float = 0.0
    _busy_steps: int = 0

    def observe_step(self, step_s: float, *, busy: bool) -> None:
        """One step's duration, and whether a save was in flight during it."""
        if busy:
            self._busy_steps += 1
            self.busy_step_s = self._average(self.busy_step_s, step_s)
        else:
            self.idle_step_s = self._average(self.idle_step_s, step_s)

    def observe_save(self, stall_s: float) -> None:
        """A save blocked the loop ``stall_s``; the previous one's busy steps are counted."""
        self.stall_s = self._average(self.stall_s, stall_s, robust=False)
        self.busy_steps_per_save = (self._busy_steps if self.busy_steps_per_save == 0.0 else
                                    (1 - self.alpha) * self.busy_steps_per_save
                                    + self.alpha * self._busy_steps)
        self._busy_steps = 0

    @property
    def toll_s(self) -> float:
        """Extra step time per save caused by its background work (0 until measured)."""
        if self.idle_step_s is None or self.busy_step_s is None:
            return 0.0
        return max(0.0, self.busy_step_s - self.idle_step_s) * self.busy_steps_per_save

    @property
    def cost_s(self) -> float | None:
        """Stall plus toll of one save; ``None`` before the first save."""
        if self.stall_s is None:
            return None
        return self.stall_s + self.toll_s

    def _average(self, current: float | None, value: float, *, robust: bool = True) -> float:
        if current is None:
            return value
        if robust and value > 3 * current:  # an epoch's evaluation, a GC pause: not a step
            return current
        return (1 - self.alpha) * current + self.alpha * value
