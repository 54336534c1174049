"""Whether a checkpoint is due: a pure decision over counters and times."""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from colabrun.jobs.spec import AUTO, CheckpointPolicy

#: the reason of a save taken for an epoch's end
EPOCH_END = "epoch_end"


def save_due(
    policy: CheckpointPolicy,
    *,
    steps_since_save: int,
    seconds_since_save: float,
    at_epoch_end: bool,
    save_cost_s: float | None = None,
    epoch_s: float = math.inf,
    writer_busy: bool = False,
    upload_ready: bool = True,
    probing: bool = False,
) -> str | None:
    """The reason a checkpoint is due now, or ``None``.

    Args:
        policy: the spec's checkpoint policy.
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        at_epoch_end: whether this boundary closes an epoch.
        save_cost_s: the cost the adaptive interval is sized by: one save's measured cost
            (:attr:`CostMeter.cost_s`), with a share of the overhead account's debt where
            one is kept (:attr:`OverheadAccount.sizing_s`); ``None`` until one was measured.
        epoch_s: how long the epoch this boundary closes took (``at_epoch_end: auto``
            saves at the end of an epoch as long as the adaptive interval:
            :func:`epoch_end_wanted`).
        writer_busy: whether the last save is still being written.
        upload_ready: whether an upload of a new checkpoint would start now (the last
            one reached the root, or failed, and the upload pace's rest is over). The
            adaptive trigger waits for it: a save the uploader cannot take yet would be
            replaced by a newer one before it reaches the root, so it costs training and
            buys nothing against a runtime's death (docs/concepts.md#the-adaptive-cadence).
        probing: whether the cost meter waits for clean steps to measure the typical step
            by (:meth:`CostMeter.holds_save`): the adaptive trigger waits for them, since
            each save would make the steps after it pay for it, and a toll measured
            against a stale typical step is no measure (docs/concepts.md#the-adaptive-cadence).

    Returns:
        ``"epoch_end"``, ``"every_steps"``, ``"every_s"``, ``"adaptive"`` or ``None``. Within an
        epoch, a boundary with no new step is never due (nothing new to save);
        an epoch end is due even so, since the position moved to the next epoch.
    """
    if steps_since_save <= 0 and not at_epoch_end:
        return None
    if at_epoch_end and epoch_end_wanted(policy, epoch_s=epoch_s, save_cost_s=save_cost_s):
        return EPOCH_END
    if policy.every_steps is not None and steps_since_save >= policy.every_steps:
        return "every_steps"
    if policy.every_s is not None and steps_since_save > 0 and (
        seconds_since_save >= policy.every_s
    ):
        return "every_s"
    if policy.max_overhead is not None and steps_since_save > 0 and not writer_busy \
            and upload_ready and not probing:
        if save_cost_s is None or seconds_since_save >= adaptive_interval_s(
                policy.max_overhead, save_cost_s):
            return "adaptive"
    return None


def epoch_end_wanted(policy: CheckpointPolicy, *, epoch_s: float,
                     save_cost_s: float | None) -> bool:
    """Whether an epoch's end is a save by itself (a pure decision).

    ``at_epoch_end: true`` saves at every epoch's end, ``false`` at none. ``auto`` (the
    default) saves at the end of every epoch that lasted at least the adaptive interval
    (:func:`adaptive_interval_s`, a save's cost / ``max_overhead``): every epoch of
    minutes unless a save costs seconds, none of epochs of a fraction of a second, whose
    saves alone would cost more than ``max_overhead`` (the digits example's 0.14 s epochs
    spent 3.8% on them: docs/concepts.md#the-adaptive-cadence); the adaptive saves
    checkpoint those. It saves at every one as ``true`` does when there is no budget
    (``max_overhead: null``), when ``keep_best`` compares the metrics an epoch logs, or
    before a save's cost is measured.

    Args:
        policy: the spec's checkpoint policy.
        epoch_s: how long the epoch lasted (from the last epoch's end, or the session's
            start).
        save_cost_s: what the adaptive interval is sized by (as :func:`save_due`'s).
    """
    if policy.at_epoch_end != AUTO:
        return bool(policy.at_epoch_end)
    if policy.max_overhead is None or policy.keep_best is not None or save_cost_s is None:
        return True
    return epoch_s >= adaptive_interval_s(policy.max_overhead, save_cost_s)


def adaptive_interval_s(max_overhead: float, save_cost_s: float) -> float:
    """Seconds between saves that keep their cost at ``max_overhead`` of training time.

    A save costing ``c`` seconds every ``T`` seconds costs ``c / (T + c)`` of the
    time; at most ``m`` when ``T >= c (1 - m) / m``. The adaptive policy saves at
    the first boundary after that, and never while the last save is still being
    written (so the background work stays bounded too). The first save of a
    session is taken at once: it measures the cost.
    """
    return save_cost_s * (1 - max_overhead) / max_overhead


#: saves over which the account spreads a debt (or a credit beyond the next save's cost):
#: each adaptive interval is sized as if the save cost its estimate plus this share of
#: what the credit lacks (:attr:`OverheadAccount.sizing_s`). Held until the whole debt was
#: repaid, the 30 ms job went 12-40 steps without a save after one that cost 3x its
#: estimate, and those gaps were most of what a runtime's death lost there (issue 19)
REPAY_SAVES = 4
#: the credit the account keeps at most, in estimated saves: one beyond the next save's,
#: so the budget a held save could not spend (its upload not ready, a probe) shortens the
#: next intervals, by 1/:data:`REPAY_SAVES` at most, instead of being lost
CREDIT_SAVES = 2


@dataclass
class OverheadAccount:
    """What checkpointing charged training, against what ``budget`` of the time allowed.

    The adaptive interval (:func:`adaptive_interval_s`) is sized from an estimate of one
    save's cost; what the estimate misses (a toll that grows, an upload's, a save of
    another trigger such as an epoch's end) would go over the budget unseen. The account
    is its correction: credit accrues at ``budget`` seconds per second and every second
    the meters charge (stalls, tolls, uploads) is debited, as soon as it is measured. The
    next interval is sized by :attr:`sizing_s`: the estimate, plus a
    :data:`REPAY_SAVES`-th of what the credit lacks to pay for the next save. A save that
    cost more than its estimate stretches the next few intervals a little each (the lack
    shrinks by about a quarter a save), not one a lot. An estimate below the true cost
    settles where the credit lacks :data:`REPAY_SAVES` times the miss, and the intervals
    are the true cost's: over a session the measured share stays at the budget. An
    estimate above it is corrected by a quarter at most (credit is never carried over
    :data:`CREDIT_SAVES` saves' cost, so a long wait, an upload that could not start, buys
    no burst of saves after it). Pure: fed with the meters' running total, the time and
    the estimate.
    """

    budget: float
    #: credit (positive) or debt (negative), in seconds of training
    balance_s: float = 0.0
    _at: float | None = None
    _charged_s: float = 0.0
    _next_s: float = 0.0

    def observe(self, now: float, charged_s: float, next_save_s: float) -> None:
        """The meters' total charge ``charged_s`` (a running sum) at monotonic ``now``;
        ``next_save_s``: what the next save is expected to cost (0 while unmeasured)."""
        if self._at is not None:
            earned = self.budget * (now - self._at)
            self.balance_s += earned - (charged_s - self._charged_s)
        self.balance_s = min(self.balance_s, CREDIT_SAVES * next_save_s)
        self._at, self._charged_s, self._next_s = now, charged_s, next_save_s

    @property
    def sizing_s(self) -> float:
        """The cost the next adaptive interval is sized by: the estimate, plus a
        :data:`REPAY_SAVES`-th of what the credit lacks to pay for the next save (minus as
        much of the credit beyond it); 0 while unmeasured, so the first save comes at once."""
        if self._next_s == 0.0:
            return 0.0
        lacking = self._next_s - self.balance_s
        return max(0.0, self._next_s + lacking / REPAY_SAVES)


#: clean steps (paying for no save, no upload running) the cost meter sees, at least, in
#: the intervals of the last :data:`PROBE_EVERY` saves, before it lets an adaptive save come
#: (:attr:`CostMeter.probe_due`); the upload pace keeps as many for its own measure
PROBE_STEPS = 3
#: saves that may follow each other without a clean step between them, at most. A probe
#: after each one would hold every save of the 30 ms job 3 steps more (issue 19), for a
#: typical step that drifts over seconds, not steps
PROBE_EVERY = 4
#: how long a save's after-effects on training last once it is written and uploaded
#: (seconds): its tail is as many steps as span this (:attr:`CostMeter.tail`). 4 steps of
#: the digits job (~3 ms), whose steps after the upload were still 0.5-2 ms slower; on the
#: 30 ms job (~40-45 ms steps here) only the first step after a save was slower (2-4 ms),
#: and a tail of 4 such steps left none clean between saves every 4-5 (issue 19)
TAIL_S = 0.012
#: steps since the last save that the meter did not see (each epoch's first, never
#: compared) after which a probe holds no adaptive save: a loop of one step an epoch
#: never shows the meter a step, and would be held for ever
PROBE_HOLD_STEPS = 20

#: a step is left out of a toll (an evaluation, a GC pause) when it took over this many
#: typical steps...
OUTLIER_STEPS = 3.0
#: ...and this much longer than one: for a 2.5 ms step, 3x is one GIL switch interval
#: (5 ms) away, exactly the delay a background thread's Python work adds to a step
#: (issue 19: 17 of the 30 steps an upload slowed were left out, 0.33 s of 0.38 s)
OUTLIER_MARGIN_S = 0.05


def is_outlier(step_s: float, typical_s: float) -> bool:
    """Whether a step is too long to be anybody's toll: an evaluation, a long GC pause."""
    return step_s > max(OUTLIER_STEPS * typical_s, typical_s + OUTLIER_MARGIN_S)


@dataclass
class CleanSteps:
    """The steps that paid for nothing (no save, no upload), which a meter compares the
    others with: the typical step, the median of the newest ``window`` (taken when read,
    once ``least`` were seen), and how many came between the last saves or uploads, for
    the probes that keep it measured (:attr:`probe_due`). Pure."""

    window: int
    least: int = 5
    _steps: deque[float] = field(default_factory=deque)
    _typical: float | None = None
    _stale: bool = False  # a step came since the median was taken
    _since: int = 0  # since the last interval ended
    # in the last intervals (the newest PROBE_EVERY - 1)
    _lately: deque[int] = field(default_factory=lambda: deque(maxlen=PROBE_EVERY - 1))

    def add(self, step_s: float) -> None:
        """One clean step's duration."""
        self._steps.append(step_s)
        if len(self._steps) > self.window:
            self._steps.popleft()
        self._stale = True
        self._since += 1

    def interval_ended(self) -> None:
        """A save (or an upload) came: the clean steps since then close an interval."""
        self._lately.append(self._since)
        self._since = 0

    @property
    def typical_s(self) -> float | None:
        """The median of the newest clean steps (``None`` until ``least`` were seen)."""
        if self._stale and len(self._steps) >= self.least:
            self._typical, self._stale = statistics.median(self._steps), False
        return self._typical

    @property
    def probe_due(self) -> bool:
        """Whether fewer than :data:`PROBE_STEPS` clean steps came in the current interval
        and the :data:`PROBE_EVERY` - 1 before it."""
        return sum(self._lately) + self._since < PROBE_STEPS


@dataclass
class CostMeter:
    """What a save costs training, measured from the loop itself.

    Two parts: the **stall** (the loop blocked while the snapshot was taken) and
    the **toll**: how much longer than a typical step the steps that pay for
    the save took, whatever the cause (the writer competing for the GIL, the
    cores, the memory bus; copy-on-write faults of a forked writer; cold caches
    after a snapshot). The steps that pay are those that end while the save is
    being written, and those after it within its tail (:attr:`tail`). The typical step is
    the median of the recent steps that paid for nothing: a machine whose speed
    drifts (a shared VM's does, by tens of percent over seconds) moves both, so
    the drift is no save's toll. The differences are summed signed, so noise
    cancels; a step over 3x the typical one and 50 ms longer (an evaluation, a
    GC pause: :func:`is_outlier`) is left out. Steps that end while an upload runs
    and pay for no save are neither: :class:`~colabrun.runner.save.pace.UploadPace`
    meters them; those that pay for a save are its toll only (:attr:`paid`), never
    the upload's too. The typical step is kept measured: saves dense enough to leave
    no step clean (the 30 ms job's, every 4 steps with a tail of 4) wait for a few
    (:attr:`probe_due`); without them the median stayed the warm-up's, slower than the
    steps that paid, and the meter charged 0.6% where the clock saw 3.9% (issue 19).
    Pure: fed with observations.
    """

    alpha: float = 0.3
    #: steps that pay for a save after it is written, at most
    tail_steps: int = 4
    #: how long a save's after-effects last once it is written (seconds): its tail is as
    #: many steps as span this, one at least (``None``: always ``tail_steps``)
    tail_s: float | None = TAIL_S
    #: whether an upload that runs while a save's steps pay for it is part of that save's
    #: cost (the adaptive cadence's: it uploads each save at once, so the upload is the
    #: save's own, or one an epoch-end save queued behind): the steps that end while it runs
    #: pay for the save, and the tail counts from its end. Otherwise (a fixed cadence) those
    #: past the tail are the upload pace's, whose rest keeps uploads at their budget. On the
    #: digits job (the write during a save's first step, the upload during the next two)
    #: steps 6-8 were still 0.5-2 ms slower: 2-4 ms of a save's 10-25 went uncharged
    charges_uploads: bool = False
    stall_s: float | None = None
    toll_s: float = 0.0
    #: every toll measured so far, summed (``toll_s`` is their moving average)
    tolls_s: float = 0.0
    #: the steps that paid for no save: the newest 15, a few seconds' worth when saves are
    #: dense, so the warm-up's slower steps leave the typical step soon
    clean: CleanSteps = field(default_factory=lambda: CleanSteps(window=15))
    _extra: float = 0.0
    _saves: int = 0
    _tolls: int = 0  # tolls learned
    _pending: bool = False  # the last save's toll is not booked yet
    _since_written: int = 1 << 30  # steps since a save was last seen in flight
    _tail: int = 0  # the last save's tail (:attr:`tail` when it was taken)
    _observed: int = 0  # steps observed since the last save
    #: whether the last step observed paid for a save (in flight, or in its tail)
    paid: bool = False

    def __post_init__(self) -> None:
        self._tail = self.tail_steps

    def observe_step(self, step_s: float, *, writing: bool = False,
                     uploading: bool = False) -> None:
        """One step's duration (for the step after a save: without the stall);
        ``writing``: the last save was still being written when the step ended;
        ``uploading``: an upload ran (a step neither clean nor a save's toll, unless the
        upload is the save's and :attr:`charges_uploads`)."""
        tail = self._tail  # fixed per save: a clean step after it may move the typical one
        paying = writing or self._since_written < tail
        self.paid = paying
        self._observed += 1
        busy = writing or (uploading and paying and self.charges_uploads)
        self._since_written = 0 if busy else self._since_written + 1
        if uploading and not paying:
            return
        if not paying:
            self.clean.add(step_s)
            return
        typical = self.typical_step_s
        if self._saves and typical is not None and not is_outlier(step_s, typical):
            self._extra += step_s - typical  # (after a setup save: nobody's toll)
        if not writing and self._since_written >= tail:
            self._book()  # the save's last paying step: its toll is known now

    def observe_save(self, stall_s: float, *, setup: bool = False) -> None:
        """A save blocked the loop ``stall_s``; the steps since the last one are its toll.

        ``setup``: the save also started the background writer (a fork, whose
        copy-on-write faults slow the next steps): a one-time cost, not learned.
        The meter starts over, so the next save, which measures, is due at once.
        """
        self._since_written = self._observed = 0
        self._tail = self.tail
        self.clean.interval_ended()
        if setup:
            self._book()  # what the last save's steps paid stays charged
            self.stall_s, self.toll_s, self._extra, self._saves = None, 0.0, 0.0, 0
            self._tolls, self._pending = 0, False
            return
        self.stall_s = stall_s if self.stall_s is None else (
            (1 - self.alpha) * self.stall_s + self.alpha * stall_s)
        self._book()  # a save that came before the last one's toll was all paid
        self._saves += 1
        self._pending = True

    def _book(self) -> None:
        """Learn the toll of the last save from the steps that paid for it so far. Booked
        as its last paying step ends, not at the next save: the cadence and the account
        (:class:`OverheadAccount`) would otherwise size the next save by a cost that
        leaves the last toll out (issue 19: 0.8 ms believed, 7-11 ms paid)."""
        if not self._pending:
            return
        self._pending = False
        if self._saves:  # before the first save, slow steps are nobody's toll
            extra = max(0.0, self._extra)
            self.tolls_s += extra
            self.toll_s = extra if self._tolls == 0 else (
                (1 - self.alpha) * self.toll_s + self.alpha * extra)
            self._tolls += 1
        self._extra = 0.0

    @property
    def typical_step_s(self) -> float | None:
        """The median of the recent clean steps (None until five were seen)."""
        return self.clean.typical_s

    @property
    def tail(self) -> int:
        """The steps that pay for a save after it is written: as many typical steps as span
        :attr:`tail_s`, one at least and :attr:`tail_steps` at most (those, until the
        typical step is measured)."""
        typical = self.typical_step_s
        if self.tail_s is None or typical is None or typical <= 0:
            return self.tail_steps
        return max(1, min(self.tail_steps, math.ceil(self.tail_s / typical - 1e-9)))

    @property
    def probe_due(self) -> bool:
        """Whether the next adaptive save waits for clean steps: a save was measured, and
        the typical step it is measured against is unknown yet, or fewer than
        :data:`PROBE_STEPS` clean steps came since the :data:`PROBE_EVERY` saves before it
        (at most 3 intervals in a row with none, then a run of 3; each waits out the last
        save's tail first)."""
        if self.stall_s is None:
            return False  # the first save measures: it comes at once
        return self.typical_step_s is None or self.clean.probe_due

    def holds_save(self, steps_since_save: int) -> bool:
        """Whether a probe holds the next adaptive save now (:attr:`probe_due`): until
        :data:`PROBE_HOLD_STEPS` of the ``steps_since_save`` went unseen by the meter. Steps
        it saw hold on: those of a long upload (a slow root's), then its tail, then 3 clean."""
        return self.probe_due and steps_since_save - self._observed < PROBE_HOLD_STEPS

    @property
    def charged_s(self) -> float:
        """Every toll measured so far, the current save's part included (its steps so far;
        booked into :attr:`tolls_s` as its last paying step ends)."""
        return self.tolls_s + max(0.0, self._extra)

    @property
    def cost_s(self) -> float | None:
        """Stall plus toll of one save; ``None`` before the first save."""
        if self.stall_s is None:
            return None
        return self.stall_s + self.toll_s
