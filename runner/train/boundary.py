"""What the loop does at a boundary (between batches, between epochs): save, stop, or
go on. A pure decision over the policy, the counters, the requests and the deadline.

A loop that accumulates gradients over several batches (``opt.step()`` and ``run.step()``
every k batches) holds gradients that no checkpoint keeps while it is *mid-accumulation*
(:func:`is_mid_accumulation`): a save or a stop that falls due then is held until the next
boundary that follows a ``run.step()``, at most k-1 batches later
(docs/concepts.md#rules-for-a-bit-exact-resume, rule 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from colabrun.jobs.spec import CheckpointPolicy
from colabrun.runner.save.policy import epoch_end_wanted, save_due
from colabrun.runner.watch.deadline import Deadline


@dataclass(frozen=True, slots=True)  # built at every boundary: slots, 4x cheaper
class Situation:
    """What the loop knows at a boundary.

    Args:
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        epoch_s: how long the epoch lasted so far (from the last epoch's end, or the
            session's start), which ``at_epoch_end: auto`` compares with the adaptive
            interval.
        at_epoch_end: whether this boundary closes an epoch.
        last_batch: whether it follows an epoch's last batch, where a periodic save
            would only precede the epoch-end save at the same step (when the policy
            wants one there: :func:`~colabrun.runner.save.policy.epoch_end_wanted`).
        has_unsaved_work: whether stopping now would lose anything.
        save_cost_s: the cost the adaptive interval is sized by (one save's, measured,
            with a share of the overhead account's debt:
            :attr:`~colabrun.runner.save.policy.OverheadAccount.sizing_s`), ``None`` until
            measured.
        writer_busy: whether the last save is still being written.
        upload_ready: whether an upload of a new checkpoint would start now.
        probing: whether the cost meter waits for clean steps to measure the typical step
            by (:meth:`~colabrun.runner.save.policy.CostMeter.holds_save`).
        checkpoint_requested: whether a save was asked for (``colabrun checkpoint``).
        stop_reason: why a stop was asked for, if one was.
        deadline: the runtime's deadline.
        now: wall time, for the deadline.
        step_s: the last step's duration, if measured.
        save_s: the learned duration of one save, if known.
        mid_accumulation: whether batches were trained since the last ``run.step()`` of a
            loop that accumulates (:func:`is_mid_accumulation`): nothing is saved or stopped.
        epoch_end_owed: an epoch-end save was held for an accumulation that spanned the
            epoch's end: the next boundary not mid-accumulation takes it (owed only where
            the policy wanted it, so taken whatever the new epoch's length).
    """

    steps_since_save: int
    seconds_since_save: float
    epoch_s: float = math.inf
    at_epoch_end: bool = False
    last_batch: bool = False
    has_unsaved_work: bool = True
    save_cost_s: float | None = None
    writer_busy: bool = False
    upload_ready: bool = True
    probing: bool = False
    checkpoint_requested: bool = False
    stop_reason: str | None = None
    deadline: Deadline = Deadline(ends_at=None)
    now: float = 0.0
    step_s: float | None = None
    save_s: float | None = None
    mid_accumulation: bool = False
    epoch_end_owed: bool = False


@dataclass(frozen=True)
class Decision:
    """Save (for ``save``'s reason) and/or stop (for ``stop``'s), or go on.

    ``held``: a save or stop fell due mid-accumulation and waits for the next boundary
    after a ``run.step()``; ``stop`` then says what to remember (``save`` is ``None``).
    """

    save: str | None = None
    stop: str | None = None
    held: bool = False

    @property
    def goes_on(self) -> bool:
        """Neither a save nor a stop."""
        return self.save is None and self.stop is None and not self.held


def is_mid_accumulation(*, batches_since_step: int, batches_per_step: int) -> bool:
    """Whether a boundary falls inside a gradient accumulation (a pure function).

    Args:
        batches_since_step: batches yielded since the last ``run.step()`` (or the
            session's start).
        batches_per_step: the most batches seen between two ``run.step()`` calls, as
            this run and the checkpoint it resumed from know it; 0 while no ``run.step()``
            was seen (a loop that never calls it keeps saving between any two batches).

    Returns:
        Whether the boundary lies strictly between two steps of a loop that steps every
        ``batches_per_step`` batches. A boundary past that many batches is not held: the
        loop no longer steps as it did, and holding longer could hold a stop for ever.
    """
    return 0 < batches_since_step < batches_per_step


def decide(policy: CheckpointPolicy, situation: Situation) -> Decision:
    """What to do at a boundary.

    A stop already asked for wins over the deadline's; the deadline stops the run
    when the final save must start now. A save is due by the policy
    (:func:`~colabrun.runner.save.policy.save_due`), else when asked for, else
    before a stop that would lose work. Mid-accumulation, whatever is due is held
    (``held``), the stop included: it never unwinds the loop before the save it needs.

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
    epoch_end_next = s.last_batch and epoch_end_wanted(policy, epoch_s=s.epoch_s,
                                                       save_cost_s=s.save_cost_s)
    reason = None if epoch_end_next else save_due(
        policy, steps_since_save=s.steps_since_save, seconds_since_save=s.seconds_since_save,
        at_epoch_end=s.at_epoch_end or s.epoch_end_owed, save_cost_s=s.save_cost_s,
        epoch_s=math.inf if s.epoch_end_owed else s.epoch_s,
        writer_busy=s.writer_busy, upload_ready=s.upload_ready, probing=s.probing)
    if reason is None and s.checkpoint_requested:
        reason = "requested"
    if reason is None and stop is not None and s.has_unsaved_work:
        reason = stop
    if s.mid_accumulation and (reason is not None or stop is not None):
        return Decision(stop=stop, held=True)
    return Decision(save=reason, stop=stop)
