"""The loop's save side: the counters a save decision reads (the steps and seconds since
the last save, the batches of an accumulation: :class:`Accumulation`), the situation it is
decided in (:mod:`colabrun.runner.train.boundary`), and handing a save to the
:class:`~colabrun.runner.save.saver.Saver`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from colabrun.jobs.handle import Stateful
from colabrun.jobs.spec import CheckpointPolicy
from colabrun.runner.clock import Clock
from colabrun.runner.save.capture import SaveContext
from colabrun.runner.save.policy import CostMeter, OverheadAccount, epoch_end_wanted
from colabrun.runner.save.saver import Saver
from colabrun.runner.save.task import WriteStats
from colabrun.runner.train.boundary import Decision, Situation, decide, is_mid_accumulation
from colabrun.runner.train.cadence import SaveCadence
from colabrun.runner.train.live import Controls
from colabrun.runner.train.position import Position
from colabrun.runner.train.save_guess import SaveGuess


@dataclass(frozen=True)
class SaveTelemetry:
    """What saves cost a run, as measured (for benchmarks and tests; live views)."""

    cadence: SaveCadence
    saver: Saver

    @property
    def stalls(self) -> Sequence[float]:
        """Seconds each save blocked the loop (the newest 1000)."""
        return self.cadence.stalls

    @property
    def cost(self) -> CostMeter:
        """The adaptive cadence's meter: ``stall_s`` and ``toll_s``."""
        return self.cadence.meter

    @property
    def last_write(self) -> WriteStats | None:
        """What the last background write cost."""
        return self.saver.last_write

    @property
    def charged_s(self) -> float:
        """Seconds of training the meters charged to checkpointing so far: the stalls, the
        saves' tolls and the uploads', the running ones' steps so far included (what the
        adaptive cadence paces by: :class:`~colabrun.runner.save.policy.OverheadAccount`)."""
        return charged_s(self.cadence, self.saver)


def charged_s(cadence: SaveCadence, saver: Saver) -> float:
    """What the meters charged to checkpointing so far (:attr:`SaveTelemetry.charged_s`)."""
    return cadence.stalled_s + cadence.meter.charged_s + saver.uploader.pace.charged_s


class Accumulation:
    """Counts the batches between ``run.step()`` calls, to hold saves mid-accumulation.

    Args:
        batches_per_step: the most batches seen between two steps so far (kept in each
            checkpoint, so a resumed run knows it before its own first step); 0: none seen.
    """

    def __init__(self, batches_per_step: int = 0) -> None:
        self.batches_per_step = batches_per_step
        self.batches_since_step = 0
        #: an epoch-end save was held for an accumulation spanning the epoch's end
        self.epoch_end_owed = False

    def on_batch(self) -> None:
        """The loop yielded one more batch."""
        self.batches_since_step += 1

    def on_step(self) -> None:
        """The user called ``run.step()``: the accumulation so far is applied."""
        self.batches_per_step = max(self.batches_per_step, self.batches_since_step)
        self.batches_since_step = 0

    @property
    def is_mid(self) -> bool:
        """Whether the loop is between two steps of an accumulation now."""
        return is_mid_accumulation(batches_since_step=self.batches_since_step,
                                   batches_per_step=self.batches_per_step)


class Saving:
    """When the loop saves, and the saves it hands over.

    Args:
        saver: commits checkpoints.
        clock: the injected clock.
        policy: the spec's checkpoint policy.
        controls: stop/checkpoint requests and the deadline.
        save_s: the learned duration of one save, for the deadline until measured.
        guess: a new job's guess of one save, from its size and the root's speed.
    """

    def __init__(self, saver: Saver, *, clock: Clock, policy: CheckpointPolicy,
                 controls: Controls, save_s: float | None = None,
                 guess: SaveGuess | None = None) -> None:
        self.saver = saver
        self._clock = clock
        self._policy = policy
        self._controls = controls
        self._save_s = save_s
        self._guess = guess
        self.cadence = SaveCadence(now=clock.monotonic())
        # each adaptive save is uploaded at once: its upload's steps are its cost
        self.cadence.meter.charges_uploads = policy.max_overhead is not None
        self.accumulation = Accumulation()
        self._account = None if policy.max_overhead is None else OverheadAccount(
            policy.max_overhead)

    @property
    def telemetry(self) -> SaveTelemetry:
        """What saves cost this run so far."""
        return SaveTelemetry(self.cadence, self.saver)

    def stepped(self) -> float | None:
        """One optimizer step ended now; its duration (``None`` for the session's first)."""
        self.accumulation.on_step()
        writing, uploading = self.saver.busy, self.saver.uploading
        step_s = self.cadence.on_step(self._clock.monotonic(), writing=writing,
                                      uploading=uploading)
        if self.cadence.work_s is not None and self.cadence.is_comparable:
            # a step that paid for a save is its toll only, not an upload's too
            self.saver.observe_step(self.cadence.work_s, writing=self.cadence.meter.paid)
        return step_s

    def has_unsaved_work(self, *, resumed: bool) -> bool:
        """Whether stopping now would lose steps, an epoch's end held for an accumulation,
        or a fresh run's first checkpoint. A save still being written counts: its commit is
        waited for, never taken again."""
        return self.cadence.steps_since_save > 0 or self.accumulation.epoch_end_owed or (
            self.saver.newest_name is None and not resumed)

    def decide(self, tracked: Mapping[str, Stateful], *, at_epoch_end: bool, last: bool,
               resumed: bool) -> Decision:
        """What to do at this boundary (refreshing the lease first). An epoch-end save
        held mid-accumulation is owed to the next boundary after a step.

        Raises:
            LeaseLost: another runner took the job over.
        """
        self.saver.refresh_lease()
        now = self._clock.monotonic()
        situation = self._situation(tracked, at_epoch_end, last, resumed, now)
        if at_epoch_end:
            self.cadence.on_epoch_end(now)
        decision = decide(self._policy, situation)
        if decision.held and at_epoch_end and epoch_end_wanted(
                self._policy, epoch_s=situation.epoch_s, save_cost_s=situation.save_cost_s):
            self.accumulation.epoch_end_owed = True
        return decision

    def expected_save_s(self, tracked: Mapping[str, Stateful]) -> float | None:
        """One save's duration: measured this session, else learned before, else guessed."""
        for known in (self.saver.save_s, self._save_s):
            if known is not None:
                return known
        return None if self._guess is None else self._guess.seconds(tracked,
                                                                    self.cadence.step_s)

    def _situation(self, tracked: Mapping[str, Stateful], at_epoch_end: bool, last: bool,
                   resumed: bool, now: float) -> Situation:
        cadence, controls = self.cadence, self._controls
        # each adaptive save's upload is in its toll (the meter ``charges_uploads``)
        account, cost_s = self._account, cadence.meter.cost_s
        if account is not None:
            # a writer's start is a one-time cost: charged by the meters, not by the account
            # (repaid, it held a session's second save back 0.6-0.8 s on the digits job)
            account.observe(now, charged_s(cadence, self.saver) - cadence.setup_s,
                            cost_s or 0.0)
        return Situation(
            steps_since_save=cadence.steps_since_save,
            seconds_since_save=cadence.seconds_since_save(now),
            epoch_s=cadence.epoch_s(now),
            at_epoch_end=at_epoch_end, last_batch=last,
            has_unsaved_work=self.has_unsaved_work(resumed=resumed),
            save_cost_s=cost_s if account is None or cost_s is None else account.sizing_s,
            writer_busy=self.saver.busy,
            upload_ready=self.saver.upload_ready,
            probing=cadence.meter.holds_save(cadence.steps_since_save),
            checkpoint_requested=controls.checkpoint_requested,
            stop_reason=controls.stop_reason, deadline=controls.deadline,
            now=self._clock.time(), step_s=cadence.step_s,
            save_s=self.expected_save_s(tracked), mid_accumulation=self.accumulation.is_mid,
            epoch_end_owed=self.accumulation.epoch_end_owed)

    def save(self, tracked: Mapping[str, Stateful], position: Position, reason: str,
             context: SaveContext) -> None:
        """Hand a save to the saver, and count it.

        Raises:
            LeaseLost, StorageTimeout, Exception: as :meth:`Saver.save`.
        """
        receipt = self.saver.save(tracked, position, reason, context=context,
                                  step_s=self.cadence.step_s)
        self.cadence.on_save(receipt, now=self._clock.monotonic())
        self.accumulation.epoch_end_owed = False
