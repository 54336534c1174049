"""The machinery behind the run handle (:mod:`colabrun.runner.train.handle`).

Saves and restores happen at the same two kinds of program point, so a
resumed run re-enters the user's loop exactly where the saved one left it:
``in_epoch``, inside ``run.batches()`` between two batches (before the next is
fetched) or after the last one; ``epoch_start``, inside ``run.epochs()``
between two epochs. ``run.step()`` only counts and records; a checkpoint that
falls due (:mod:`colabrun.runner.train.boundary`) is taken at the next of those
points, unless the loop is mid-accumulation (batches trained since the last
``run.step()`` of a loop that steps every k batches): then at the first point after
the next ``run.step()``. On resume, the state goes back as
:mod:`colabrun.runner.train.restore` says; the loader's own state as
:mod:`colabrun.runner.train.loaders` says. A fresh run reseeds the global generators
as its training starts (:func:`~colabrun.runner.train.rng.training_seed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch

from colabrun.jobs.errors import HandleError
from colabrun.jobs.handle import Stateful
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.dist.group import Group
from colabrun.runner.dist.layout import Layout
from colabrun.runner.dist.ranks import Ranks
from colabrun.runner.dist.virtual import unwrapped
from colabrun.runner.platform import use_deterministic_algorithms
from colabrun.runner.save.saver import Saver
from colabrun.runner.train.boundary import Decision
from colabrun.runner.train.data import steps_per_epoch
from colabrun.runner.train.generators import as_tracked
from colabrun.runner.train.live import StopTraining, Wiring
from colabrun.runner.train.loaders import LoaderKeeper
from colabrun.runner.train.metrics import MetricsLog
from colabrun.runner.train.position import EPOCH_START, IN_EPOCH, Position
from colabrun.runner.train.report import EpochMeans, epoch_line
from colabrun.runner.train.restore import (
    BATCHES_PER_STEP,
    LOADER,
    MICRO_BATCHES,
    OWN_EXTRAS,
    Restorer,
    capture_epoch_start,
    save_context,
)
from colabrun.runner.train.resume import PendingResume, ResumePoint
from colabrun.runner.train.saving import Accumulation, Saving
from colabrun.runner.train.untracked import GeneratorWatch, current_frame


class Loop:
    """One session's training loop, as the user's function drives it through ``run``.

    Args:
        spec: the job spec.
        device: where training runs.
        saver: commits checkpoints.
        metrics: the job's metrics log.
        clock: the injected clock.
        resume: the checkpoint to continue from, ``None`` for a fresh start, or a
            :class:`PendingResume` still loading in the background (waited for when
            first needed: at ``track``, or anything that depends on where the run resumes).
        wiring: what else the runner connects.
    """

    def __init__(self, *, spec: JobSpec, device: torch.device, saver: Saver,
                 metrics: MetricsLog, clock: Clock,
                 resume: ResumePoint | PendingResume | None = None,
                 wiring: Wiring | None = None, group: Group | None = None) -> None:
        self.spec = spec
        self.device = device
        #: the ranks run here (``run.split``, ``run.wrap``: :class:`Ranks`)
        self.ranks = ranks = Ranks(group or Group(Layout(ranks=spec.distributed.ranks)))
        self.group, self.layout = ranks.group, ranks.layout
        self._streams, self._virtual = ranks.streams, ranks.virtual
        self.params: Mapping[str, Any] = MappingProxyType(dict(spec.params))
        self._metrics, self._clock = metrics, clock
        self._wiring = wiring = wiring or Wiring()
        self.progress = wiring.progress
        #: when to save, and the saves handed over (its ``telemetry``: what they cost)
        self.saving = Saving(saver, clock=clock, policy=spec.checkpoint,
                              controls=wiring.controls, save_s=wiring.save_s,
                              guess=wiring.save_guess)
        self.micro_batches = wiring.micro_batches
        self._pending = resume if isinstance(resume, PendingResume) else None
        self._restorer = Restorer(streams=self._streams)
        self._loaders = LoaderKeeper()
        self._watch = GeneratorWatch()
        self._resumed = False
        self.extras: dict[str, Any] = {}
        self._position = Position()
        self._tracked: dict[str, Stateful] = {}
        self._epochs_started = self._finished = False
        self._epoch_rng: dict[str, Any] | None = None
        self._epoch_means = EpochMeans()
        self._latest: dict[str, float] = {}  # each metric's newest value, for keep_best
        self.progress.epochs_total = spec.epochs
        self.progress.micro_batches = self.micro_batches
        self._move(self._position)
        if self._pending is None:
            self._adopt(resume if isinstance(resume, ResumePoint) else None)

    @property
    def position(self) -> Position:
        """Where the loop is (once the resume point is known)."""
        self.resolve()
        return self._position

    @property
    def resumed(self) -> bool:
        """Whether this run continues from a checkpoint."""
        self.resolve()
        return self._resumed

    # -- what the user's calls do ---------------------------------------------------

    def track(self, objects: Mapping[str, Any]) -> None:
        """Register objects to save; when resuming, load their saved state now. Random
        generators (:mod:`colabrun.runner.train.generators`) are tracked through adapters.

        Raises:
            HandleError: an object has no ``state_dict``/``load_state_dict`` and is no
                generator, or the checkpoint has no state under that name.
        """
        self.resolve()
        for name, given in objects.items():
            obj = as_tracked(name, unwrapped(given), ranks=self.layout.ranks)
            self._restorer.load(name, obj)
            self._tracked[name] = obj

    def epochs(self) -> Iterator[int]:
        """Yield the epoch numbers still to do; saves between epochs when due.

        Raises:
            HandleError: iterated a second time.
        """
        self.resolve()
        if self._epochs_started:
            raise HandleError("run.epochs() can be iterated only once per run")
        self._epochs_started = True
        self._start_training()
        for epoch in range(self._position.epoch, self.spec.epochs):
            self._restorer.at_epoch_start(self._tracked)
            self._epoch_rng = capture_epoch_start(self._tracked, self._streams)
            yield epoch
            self._move(self._position.after_epoch(epoch))
            self._wiring.on_point("epoch.end")
            self._boundary(where=EPOCH_START, at_epoch_end=True)
            means = self._epoch_means.take()
            if self._wiring.on_epoch_end is not None:  # one plain line per epoch
                self._wiring.on_epoch_end(epoch_line(
                    self._position, epochs=self.spec.epochs, means=means,
                    saved=self.saving.saver.durability().describe(now=self._clock.time())))
        self._finish()

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield the current epoch's batches still to do; saves between batches when due."""
        self.resolve()
        self._start_training()
        self._restorer.at(EPOCH_START, self._tracked)  # batches without epochs(), maybe
        layout = self.layout
        it = iter(self._loaders.open(loader, seed=self.spec.seed, epoch=self._position.epoch,
                                     skip=self._position.batch, ranks=layout.hosted,
                                     world=layout.ranks))
        self.progress.batches_in_epoch = steps_per_epoch(loader, layout.ranks)
        while True:
            last = self._position.batch == self.progress.batches_in_epoch
            self._boundary(where=IN_EPOCH, last=last)
            self._restorer.at(IN_EPOCH, self._tracked)
            try:
                batch = self._virtual.next_batch(it)
            except StopIteration:
                self.progress.phase = "between"
                return
            self.progress.phase = "train"
            self.saving.accumulation.on_batch()  # counted before its body's run.step()
            self._wiring.on_point("batch")
            yield batch
            self._move(self._position.after_batch())

    def step(self, metrics: Mapping[str, float]) -> None:
        """Count one optimizer step; ``metrics`` go to the metrics log."""
        self.resolve()
        self.progress.step_s = self.saving.stepped()
        self._move(self._position.after_step())
        if self._wiring.on_progress is not None:
            self._wiring.on_progress(self.progress)
        if metrics:
            self.log(metrics)
        self._wiring.on_point("step")

    def log(self, metrics: Mapping[str, float]) -> None:
        """Record metrics at the current step."""
        self.resolve()
        self._epoch_means.add(metrics)
        values = {k: float(v) for k, v in metrics.items()}
        self._latest.update(values)
        self.progress.metrics = dict(self._latest)
        if not self.layout.is_leader:  # the leader's records are the job's
            return
        self._metrics.append(
            {"step": self._position.step, "epoch": self._position.epoch,
             "session": self._wiring.session, "time": self._clock.time(), **values})

    # -- the runner's side ------------------------------------------------------------

    def close(self, upload_wait_s: float = 600.0) -> bool:
        """After the training function returned: save what is not saved yet, and wait
        for the uploads. Returns whether the newest checkpoint reached the root."""
        if not self._finished:
            self._finish()
        if not self.layout.is_leader:  # the leader saves and uploads
            return True
        self.saving.saver.finish(upload_wait_s)
        return self.saving.saver.is_durable

    def resolve(self) -> None:
        """Wait for a resume point still loading in the background, and adopt it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        phase, self.progress.phase = self.progress.phase, "load"
        try:
            self._adopt(pending.result())
        finally:
            self.progress.phase = phase

    # -- inside -----------------------------------------------------------------------

    def _adopt(self, point: ResumePoint | None) -> None:
        """Continue from ``point`` (``None``: a fresh start)."""
        self._restorer = Restorer(point, streams=self._streams)
        self._resumed = point is not None
        self.ranks.check_start(point, allow_inexact=self.spec.distributed.allow_inexact)
        if point is None:
            return
        self.extras = {k: v for k, v in point.extras.items() if k not in OWN_EXTRAS}
        self.micro_batches = max(self.micro_batches, int(point.extras.get(MICRO_BATCHES, 1)))
        self.saving.accumulation = Accumulation(int(point.extras.get(BATCHES_PER_STEP, 0)))
        self._loaders = LoaderKeeper(point.payload.get(LOADER))
        self.progress.micro_batches = self.micro_batches
        self._move(point.position)

    def _start_training(self) -> None:
        """A fresh run reseeds; an inductor the set-up imported learns ``deterministic``."""
        self._restorer.start_training(self.spec.seed)
        use_deterministic_algorithms(self.spec.deterministic)

    def _move(self, position: Position) -> None:
        self._position = position
        self.progress.step, self.progress.epoch = position.step, position.epoch
        self.progress.batch = position.batch

    def _boundary(self, *, where: str, at_epoch_end: bool = False, last: bool = False) -> None:
        """Save when due or asked; stop when asked. ``last``: after an epoch's last batch.
        Mid-accumulation, a save or stop due waits (the stop is remembered)."""
        self._watch.look(current_frame())
        decision = self.group.agree(lambda: self.saving.decide(
            self._tracked, at_epoch_end=at_epoch_end, last=last, resumed=self._resumed),
            kind=Decision)
        controls = self._wiring.controls
        if decision.stop is not None:
            controls.request_stop(decision.stop)
        if decision.held:
            return
        if decision.save is not None:
            controls.checkpoint_requested = False
            if not self._watch.done:
                self._watch.report(self._tracked, kept=self._loaders.generators())
            self._save(where=where, reason=decision.save)
            # read again: a signal may come during the save (one agreed reading)
            stop = self.group.agree(lambda: controls.stop_reason)
        else:
            stop = decision.stop
        if stop is not None:
            controls.request_stop(stop)
            raise StopTraining(stop)

    def _finish(self) -> None:
        self._finished = True
        if self.group.agree(lambda: self.saving.has_unsaved_work(resumed=self._resumed)):
            self._save(where=EPOCH_START, reason="final")

    def _save(self, *, where: str, reason: str) -> None:
        self._restorer.check_all_restored(self._tracked)
        self.progress.phase = "save"
        epoch_rng = self._epoch_rng
        ranks = self.ranks.gather(epoch_rng)
        if ranks is None:  # another process's: the leader writes the checkpoint
            self.progress.phase = "train"
            return
        context = save_context(where, extras=self.ranks.stamped(self.extras),
                               micro_batches=self.micro_batches,
                               rng=ranks.now[0], epoch_rng=epoch_rng,
                               metrics=self._latest, loader=self._loaders.state(where),
                               batches_per_step=self.saving.accumulation.batches_per_step,
                               rank_rng=ranks.now, rank_epoch_rng=ranks.epoch)
        self.saving.save(self._tracked, self._position.saved_at(where), reason, context)
        self.progress.phase = "train"
