"""When the next upload may start: durable first, paced by the slowdown uploads cause.

On Colab only what reached the root survives the runtime, so the uploader sends the
newest local checkpoint as soon as the previous upload ends (docs/concepts.md#uploads).
It rests between uploads only as far as they measurably slow training: the steps that
end while an upload runs are compared with the typical step of those that pay for
nothing (no upload, no local write). On a GPU runtime, whose CPU is mostly idle, that
slowdown is nil and uploads run back to back; on a small CPU job they cost steps, and
the rest keeps that cost at ``budget`` of the training time. What one upload costs
(:attr:`UploadPace.cost_s`) joins a local save's in the adaptive cadence, whose saves each
upload at once (docs/concepts.md#the-adaptive-cadence). Pure: fed with observations,
asked for a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from colabrun.runner.save.policy import PROBE_STEPS, CleanSteps, is_outlier

#: the share of training time uploads may cost when the spec sets no ``max_overhead``
UPLOAD_BUDGET = 0.01
#: the weight of the newest upload in :attr:`UploadPace.cost_s`
COST_ALPHA = 0.3


@dataclass
class UploadPace:
    """The measured slowdown of training while uploading, and the rest it calls for.

    Args:
        budget: the share of training time uploads may cost.
    """

    budget: float = UPLOAD_BUDGET
    #: seconds of training uploads cost so far (their steps' excess over the typical)
    toll_s: float = 0.0
    #: seconds uploads ran while steps were measured
    measured_s: float = 0.0
    #: seconds of training one upload costs (a moving average; ``None`` before one)
    cost_s: float | None = None
    #: the steps that paid for nothing: the typical step is the median of the newest 31
    clean: CleanSteps = field(default_factory=lambda: CleanSteps(window=31, least=1))
    _excess: float = 0.0   # of the steps since the current upload began
    _paid: float = 0.0     # their duration
    _last_step_s: float | None = None

    def observe_step(self, step_s: float, *, uploading: bool, writing: bool = False) -> None:
        """One step's duration; ``uploading``: an upload ran when it ended; ``writing``: it
        paid for a local save (written meanwhile, or just before: the save's cost, metered
        by :class:`~colabrun.runner.save.policy.CostMeter`, never the upload's too)."""
        self._last_step_s = step_s
        if writing:
            return
        if not uploading:
            self.clean.add(step_s)
            return
        typical = self.clean.typical_s
        if typical is not None and not is_outlier(step_s, typical):
            self._excess += step_s - typical
            self._paid += step_s

    @property
    def charged_s(self) -> float:
        """What uploads cost training so far, the running upload's steps included."""
        return self.toll_s + max(0.0, self._excess)

    @property
    def probe_due(self) -> bool:
        """Whether the next upload rests :data:`~colabrun.runner.save.policy.PROBE_STEPS`
        clean steps first: too few were seen since the
        :data:`~colabrun.runner.save.policy.PROBE_EVERY` uploads before it began."""
        return self.clean.probe_due

    @property
    def slowdown(self) -> float | None:
        """How much longer steps took while uploading, as a fraction of the typical step
        (``None`` before a measurement)."""
        if self._paid <= 0.0:
            return None
        return max(0.0, self._excess) / max(self._paid - self._excess, 1e-9)

    def rest_s(self, upload_s: float) -> float:
        """An upload that took ``upload_s`` seconds just ended: how long until the next.

        Its cost is the time its steps lost, learned into :attr:`cost_s`; the rest makes
        that ``budget`` of the time from this upload's start to the next's, and leaves
        :data:`~colabrun.runner.save.policy.PROBE_STEPS` clean steps when too few were seen
        lately (:attr:`probe_due`).
        The average, not this upload's own toll: on a shared VM one upload's steps may
        all fall in a slow second, and a rest of 50 times that held the next checkpoint
        back for seconds (issue 19).
        """
        lost = max(0.0, self._excess)
        if self._paid > 0.0:
            self.toll_s += lost
            self.measured_s += upload_s
            self.cost_s = lost if self.cost_s is None else (
                (1 - COST_ALPHA) * self.cost_s + COST_ALPHA * lost)
        self._excess = self._paid = 0.0
        probe = 0.0
        if self._last_step_s is not None and self.probe_due:
            probe = PROBE_STEPS * self._last_step_s
        self.clean.interval_ended()
        return max((self.cost_s or 0.0) / self.budget - upload_s, probe)
