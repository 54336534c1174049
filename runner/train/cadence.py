"""The counters a save decision reads, fed by the loop: steps and time since the last
save, the step time, and what saves cost (:class:`~colabrun.runner.save.policy.CostMeter`).
Pure: times are passed in, nothing is read from a clock here.
"""

from __future__ import annotations

from collections import deque

from colabrun.runner.save.capture import SaveReceipt
from colabrun.runner.save.policy import CostMeter

#: stalls remembered (the newest), for the benchmarks
STALLS_KEPT = 1000


class SaveCadence:
    """Steps and saves as the loop observed them.

    Args:
        now: monotonic time at the start (the first "last save").
    """

    def __init__(self, now: float) -> None:
        self.steps_since_save = 0
        self.last_save_at = now
        #: when the current epoch began: the last epoch's end (or the session's start)
        self.epoch_started_at = now
        #: the last step's duration (``None`` before two steps)
        self.step_s: float | None = None
        #: the last step's duration without a save's stall (``None`` before two steps)
        self.work_s: float | None = None
        self.meter = CostMeter()
        #: seconds each save blocked the loop (the newest :data:`STALLS_KEPT`)
        self.stalls: deque[float] = deque(maxlen=STALLS_KEPT)
        #: seconds all this session's saves blocked the loop
        self.stalled_s = 0.0
        #: of which the saves that started the writer blocked it: a one-time cost
        self.setup_s = 0.0
        self._last_step_at: float | None = None
        self._after_save = False  # the next step's time includes a save's stall
        self._after_epoch = False  # the next step's time includes the work between epochs
        #: whether the last step is comparable with the others: not the first of an epoch,
        #: whose time holds the work between epochs (an evaluation, the scheduler, a new
        #: loader iterator), none of it a save's or an upload's toll
        self.is_comparable = False

    def seconds_since_save(self, now: float) -> float:
        """Monotonic seconds since the last save (or the start)."""
        return now - self.last_save_at

    def on_step(self, now: float, *, writing: bool, uploading: bool = False) -> float | None:
        """One optimizer step ended at ``now``; ``writing``: a save is still being written;
        ``uploading``: an upload to the root runs (its cost is the upload pace's).

        Returns:
            The step's duration, ``None`` for the first step of the session.
        """
        if self._last_step_at is not None:
            self.step_s = now - self._last_step_at
            # the step after a save holds its stall, counted apart
            stall = self.stalls[-1] if self._after_save else 0.0
            self.work_s = max(0.0, self.step_s - stall)
            self.is_comparable = not self._after_epoch
            if self.is_comparable:
                self.meter.observe_step(self.work_s, writing=writing, uploading=uploading)
        self._after_save = self._after_epoch = False
        self._last_step_at = now
        self.steps_since_save += 1
        return self.step_s

    def epoch_s(self, now: float) -> float:
        """How long the current epoch has lasted at ``now`` (monotonic seconds)."""
        return now - self.epoch_started_at

    def on_epoch_end(self, now: float) -> None:
        """An epoch ended at ``now``: the next one begins. Its first step is timed, but
        metered for no save or upload. Learned as the epoch-end save's toll, it held the next
        saves back: on a loaded VM the 30 ms job's root had nothing newer than an epoch-end
        save 18-29 steps later (issue 19)."""
        self._after_epoch = True
        self.epoch_started_at = now

    def on_save(self, receipt: SaveReceipt, now: float) -> None:
        """A save was handed to the writer at ``now``, blocking the loop ``receipt.stall_s``."""
        self.steps_since_save = 0
        self.last_save_at = now
        self.stalls.append(receipt.stall_s)
        self.stalled_s += receipt.stall_s
        if receipt.started_writer:
            self.setup_s += receipt.stall_s
        self.meter.observe_save(receipt.stall_s, setup=receipt.started_writer)
        self._after_save = True
