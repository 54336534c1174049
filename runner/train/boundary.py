"""What the loop does at a boundary (between batches, between epochs): save, stop, or
go on. A pure decision over the policy, the counters, the requests and the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from colabrun.jobs.spec import CheckpointPolicy
from colabrun.runner.save.policy import save_due
from colabrun.runner.watch.deadline import Deadline


@dataclass(frozen=True)
class Situation:
    """What the loop knows at a boundary.

    Args:
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        at_epoch_end: whether this boundary closes an epoch.
        last_batch: whether it follows an epoch's last batch, where a periodic save
            would only precede the epoch-end save at the same step.
        has_unsaved_work: whether stopping now would lose anything.
        save_cost_s: the measured cost of one save, ``None`` until measured.
        writer_busy: whether the last save is still being written.
        upload_ready: whether an upload of a new checkpoint would start now.
        checkpoint_requested: whether a save was asked for (``colabrun checkpoint``).
        stop_reason: why a stop was asked for, if one was.
        deadline: the runtime's deadline.
        now: wall time, for the deadline.
        step_s: the last step's duration, if measured.
        save_s: the learned duration of one save, if known.
    """

    steps_since_save: int
    seconds_since_save: float
    at_epoch_end: bool = False
    last_batch: bool = False
    has_unsaved_work: bool = True
    save_cost_s: float | None = None
    writer_busy: bool = False
    upload_ready: bool = True
    checkpoint_requested: bool = False
    stop_reason: str | None = None
    deadline: Deadline = Deadline(ends_at=None)
    now: float = 0.0
    step_s: float | None = None
    save_s: float | None = None


@dataclass(frozen=True)
class Decision:
    """Save (for ``save``'s reason) and/or stop (for ``stop``'s), or go on."""

    save: str | None = None
    stop: str | None = None

    @property
    def goes_on(self) -> bool:
        """Neither a save nor a stop."""
        return self.save is None and self.stop is None


def decide(policy: CheckpointPolicy, situation: Situation) -> Decision:
    """What to do at a boundary.

    A stop already asked for wins over the deadline's; the deadline stops the run
    when the final save must start now. A save is due by the policy
    (:func:`~colabrun.runner.save.policy.save_due`), else when asked for, else
    before a stop that would lose work.

    Args:
        policy: the spec's checkpoint policy.
        situation: what the loop knows now.

    Returns:
        The decision; a stop is taken after the save, if both.
    """
    s = situation
    stop = s.stop_reason
    if stop is None and s.deadline.must_save_now(s.now, step_s=s.step_s, save_s=s.save_s):
        stop = "deadline"
    reason = None if s.last_batch and policy.at_epoch_end else save_due(
        policy, steps_since_save=s.steps_since_save, seconds_since_save=s.seconds_since_save,
        at_epoch_end=s.at_epoch_end, save_cost_s=s.save_cost_s, writer_busy=s.writer_busy,
        upload_ready=s.upload_ready)
    if reason is None and s.checkpoint_requested:
        reason = "requested"
    if reason is None and stop is not None and s.has_unsaved_work:
        reason = stop
    return Decision(save=reason, stop=stop)
