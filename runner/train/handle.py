"""The run handle the user's training function receives (see :mod:`colabrun.jobs.handle`).

Saves and restores happen at the same two kinds of program point, so a
resumed run re-enters the user's loop exactly where the saved one left it:

* ``in_epoch``: inside :meth:`Run.batches`, between two batches (before the
  next one is fetched) or after the last one;
* ``epoch_start``: inside :meth:`Run.epochs`, between two epochs.

A mid-epoch checkpoint also holds the RNG state of its epoch's start, restored
when :meth:`Run.epochs` yields that epoch again, so draws at the top of an
epoch repeat too.

``run.step()`` only counts and records; a checkpoint that falls due is taken
at the next of those points. On resume, tracked objects are loaded when they
are tracked, and the RNG states are restored last, at the resume point.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from colabrun.jobs.errors import HandleError
from colabrun.jobs.handle import Stateful
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.save.policy import CostMeter, save_due
from colabrun.runner.save.saver import Saver
from colabrun.runner.save.snapshot import (
    FORK,
    HostBuffers,
    choose_mode,
    live_state,
    parameters_with_gradients,
    tensor_stats,
)
from colabrun.runner.save.writer import fork_available, writer_mode
from colabrun.runner.train.data import remaining_batches, split_batch
from colabrun.runner.train.live import Controls, LiveProgress, StopTraining
from colabrun.runner.train.metrics import MetricsLog
from colabrun.runner.train.rng import capture_rng, restore_rng
from colabrun.state.hooks import no_hook
from colabrun.state.model import CheckpointRecord

IN_EPOCH = "in_epoch"
EPOCH_START = "epoch_start"
RNG_EPOCH = "rng_epoch_start"  # payload key: the RNG state when the current epoch began
MICRO_BATCHES = "_colabrun_micro_batches"  # kept with the extras: survives restarts


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint left the loop, and what it holds."""

    name: str
    step: int
    epochs_done: int
    batch: int
    where: str
    payload: Mapping[str, Any]
    extras: Mapping[str, Any]


class PendingResume:
    """A resume point being found and loaded in a background thread.

    Reading the newest checkpoint (and checking its sha256) overlaps with the
    user's setup (building the model, loading data) until the run first needs
    it. ``find`` returns the resume point or ``None``; ``on_found`` is then
    called in the waiting thread (to record the session) and its result used.
    """

    def __init__(self, find: Callable[[], Any],
                 on_found: Callable[[Any], ResumePoint | None]) -> None:
        self._on_found = on_found
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._load, args=(find,),
                                        name="colabrun-resume", daemon=True)
        self._thread.start()

    def _load(self, find: Callable[[], Any]) -> None:
        try:
            self._box["value"] = find()
        except BaseException as exc:  # raised where the run waits for it
            self._box["error"] = exc

    def result(self) -> ResumePoint | None:
        """Wait for the load; record and return its resume point (or raise its error)."""
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._on_found(self._box["value"])


class Run:
    """The concrete :class:`colabrun.jobs.handle.TrainingRun`.

    Args:
        spec: the job spec.
        device: where training runs.
        saver: commits checkpoints.
        metrics: the job's metrics log.
        clock: the injected clock.
        resume: the checkpoint to continue from, ``None`` for a fresh start, or a
            :class:`PendingResume` still loading in the background (it is waited for
            when first needed: at ``track``, or anything that depends on where
            the run resumes).
        session: this session's index, stamped on metrics.
        on_point: called at ``"step"`` and ``"epoch.end"`` (fault injection).
        on_epoch_end: receives one progress line per epoch.
        controls: stop/checkpoint requests and the deadline, read at boundaries.
        progress: where the loop is, for the heartbeat thread.
        micro_batches: pieces :meth:`split` cuts each batch into (raised after a CUDA OOM).
        save_s: the learned duration of one save, for the deadline until measured.
    """

    def __init__(
        self,
        *,
        spec: JobSpec,
        device: torch.device,
        saver: Saver,
        metrics: MetricsLog,
        clock: Clock,
        resume: ResumePoint | PendingResume | None = None,
        session: int = 0,
        on_point: Callable[[str], None] = no_hook,
        on_epoch_end: Callable[[str], None] | None = None,
        controls: Controls | None = None,
        progress: LiveProgress | None = None,
        micro_batches: int = 1,
        save_s: float | None = None,
        on_progress: Callable[[LiveProgress], None] | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.params: Mapping[str, Any] = MappingProxyType(dict(spec.params))
        self._saver = saver
        self._metrics = metrics
        self._clock = clock
        self._resume: ResumePoint | None = None
        self._pending: PendingResume | None = (
            resume if isinstance(resume, PendingResume) else None)
        self._resumed = False
        self._extras: dict[str, Any] = {}
        self._session = session
        self._on_point = on_point
        self._tracked: dict[str, Stateful] = {}
        self._epochs_done = 0
        self._batch = 0
        self._global_step = 0
        self._steps_since_save = 0
        self._last_save_at = clock.monotonic()
        self._last_step_at: float | None = None
        self._step_s: float | None = None
        self._epochs_started = False
        self._finished = False
        self._epoch_rng: dict[str, Any] | None = None
        self._on_epoch_end = on_epoch_end
        self._epoch_metrics: dict[str, list[float]] = {}
        self.controls = controls or Controls()
        self.progress = progress or LiveProgress()
        self.micro_batches = micro_batches
        self.progress.epochs_total = spec.epochs
        self.progress.micro_batches = self.micro_batches
        if self._pending is None:
            self._adopt(resume if isinstance(resume, ResumePoint) else None)
        self._save_s = save_s
        self._on_progress = on_progress
        # shared with a writer process where one can be forked
        self._buffers = HostBuffers(shared=fork_available())
        self._fingerprint = spec.fingerprint()
        #: seconds each save of this session blocked the loop (the newest 1000)
        self.save_stalls: deque[float] = deque(maxlen=1000)
        self._cost = CostMeter()
        self._after_save = False  # the next step's time includes a save's stall
        self.progress.step = self._global_step
        self.progress.epoch = self._epochs_done
        self.progress.epochs_total = spec.epochs
        self.progress.micro_batches = self.micro_batches

    # -- what the user reads ------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        self._resolve()
        return self._epochs_done

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, across all sessions."""
        self._resolve()
        return self._global_step

    @property
    def resumed(self) -> bool:
        """Whether this run continues from a checkpoint."""
        self._resolve()
        return self._resumed

    @property
    def extras(self) -> dict[str, Any]:
        """Small JSON values saved with every checkpoint (best accuracy so far, say)."""
        self._resolve()
        return self._extras

    @extras.setter
    def extras(self, value: dict[str, Any]) -> None:
        self._resolve()
        self._extras = value

    @property
    def saver(self) -> Saver:
        """The saver committing this run's checkpoints."""
        return self._saver

    @property
    def save_cost(self) -> CostMeter:
        """What a save costs training, as measured so far (the adaptive cadence's meter):
        ``stall_s`` and ``toll_s``, ``None``/0 before the first save."""
        return self._cost

    @property
    def last_checkpoint(self) -> CheckpointRecord | None:
        """The checkpoint this session committed last, if any."""
        return self._saver.last

    # -- what the user calls ------------------------------------------------------

    def track(self, **objects: Stateful) -> None:
        """Register objects to save; when resuming, load their saved state now.

        Raises:
            HandleError: an object has no ``state_dict``/``load_state_dict``, or
                the checkpoint has no state under that name.
        """
        self._resolve()
        for name, obj in objects.items():
            if not isinstance(obj, Stateful):
                raise HandleError(
                    f"run.track({name}=...): a {type(obj).__name__} has no state_dict() and "
                    "load_state_dict(); track modules, optimizers, schedulers or such objects"
                )
            if self._resume is not None:
                saved = self._resume.payload["tracked"]
                if name not in saved:
                    raise HandleError(
                        f"run.track({name}=...): checkpoint {self._resume.name} holds no state "
                        f"for {name!r} (it holds {sorted(saved)}); track the same objects under "
                        "the same names in every run"
                    )
                obj.load_state_dict(saved[name])
            self._tracked[name] = obj

    def epochs(self) -> Iterator[int]:
        """Yield the epoch numbers still to do; saves between epochs when due."""
        self._resolve()
        if self._epochs_started:
            raise HandleError("run.epochs() can be iterated only once per run")
        self._epochs_started = True
        for epoch in range(self._epochs_done, self.spec.epochs):
            self._start_epoch()
            yield epoch
            self._epochs_done = epoch + 1
            self._batch = 0
            self.progress.epoch, self.progress.batch = self._epochs_done, 0
            self._on_point("epoch.end")
            self._boundary(where=EPOCH_START, at_epoch_end=True)
            self._report_epoch()
        self._finish()

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield the current epoch's batches still to do; saves between batches when due."""
        self._resolve()
        self._restore_rng_at(EPOCH_START)  # the user may loop over batches without epochs()
        it = iter(remaining_batches(loader, seed=self.spec.seed, epoch=self._epochs_done,
                                    skip=self._batch))
        self.progress.batches_in_epoch = _length(loader)
        while True:
            self._boundary(where=IN_EPOCH, last=self._batch == self.progress.batches_in_epoch)
            self._restore_rng_at(IN_EPOCH)
            try:
                batch = next(it)
            except StopIteration:
                self.progress.phase = "between"
                return
            self.progress.phase = "train"
            yield batch
            self._batch += 1
            self.progress.batch = self._batch

    def step(self, **metrics: float) -> None:
        """Count one optimizer step; ``metrics`` (e.g. ``loss=``) go to the metrics log."""
        self._resolve()
        now = self._clock.monotonic()
        if self._last_step_at is not None:
            self._step_s = now - self._last_step_at
            # the step after a save holds its stall, counted apart
            stall = self.save_stalls[-1] if self._after_save else 0.0
            self._cost.observe_step(max(0.0, self._step_s - stall), writing=self._saver.busy)
        self._after_save = False
        self._last_step_at = now
        self._global_step += 1
        self._steps_since_save += 1
        self.progress.step = self._global_step
        self.progress.step_s = self._step_s
        if self._on_progress is not None:
            self._on_progress(self.progress)
        if metrics:
            self._record(metrics)
        self._on_point("step")

    def split(self, batch: Any) -> Iterator[tuple[Any, float]]:
        """Cut a batch into :attr:`micro_batches` pieces along dim 0: ``(piece, weight)``.

        Normally one piece of weight 1. After a CUDA OOM the supervisor restarts
        with twice as many pieces; accumulate gradients over them, scaling each
        piece's mean loss by its weight, and the effective batch is unchanged::

            optimizer.zero_grad()
            for (x, y), weight in run.split(batch):
                (loss_fn(model(x), y) * weight).backward()
            optimizer.step()
        """
        yield from split_batch(batch, self.micro_batches)

    def log(self, **metrics: float) -> None:
        """Record metrics at the current step (validation accuracy, say)."""
        self._resolve()
        self._record(metrics)

    # -- the runner's side --------------------------------------------------------

    def close(self, upload_wait_s: float = 600.0) -> bool:
        """After the training function returned: save what is not saved yet, and wait
        for the uploads. Returns whether the newest checkpoint reached the root."""
        if not self._finished:
            self._finish()
        self._saver.finish(upload_wait_s)
        return self._saver.is_durable

    def settle(self) -> None:
        """If the training function ended before needing its resume point, still
        wait for it (the session is recorded then); its errors are not raised."""
        try:
            self._resolve()
        except Exception:  # the training function's own outcome is what counts
            return

    def _resolve(self) -> None:
        """Wait for a resume point still loading in the background, and adopt it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        phase, self.progress.phase = self.progress.phase, "load"
        try:
            self._adopt(pending.result())
        finally:
            self.progress.phase = phase

    def _adopt(self, resume: ResumePoint | None) -> None:
        """Continue from ``resume`` (``None``: a fresh start)."""
        self._resume = resume
        self._resumed = resume is not None
        if resume is None:
            return
        self._extras = {k: v for k, v in resume.extras.items() if k != MICRO_BATCHES}
        self._epochs_done, self._batch, self._global_step = (
            resume.epochs_done, resume.batch, resume.step)
        self.micro_batches = max(self.micro_batches, int(resume.extras.get(MICRO_BATCHES, 1)))
        self.progress.step, self.progress.epoch = self._global_step, self._epochs_done
        self.progress.micro_batches = self.micro_batches

    def _finish(self) -> None:
        self._finished = True
        if self._has_unsaved_work():
            self._save(where=EPOCH_START, reason="final")

    def _report_epoch(self) -> None:
        """One plain line per epoch: progress, metric means, the newest checkpoint."""
        means = ", ".join(f"{key} {sum(v) / len(v):.4g}" for key, v in self._epoch_metrics.items())
        self._epoch_metrics = {}
        if self._on_epoch_end is None:
            return
        newest = self._saver.newest_name  # the epoch's own save, even while it is written
        saved = f"; saved {newest}" if newest is not None else ""
        self._on_epoch_end(f"epoch {self._epochs_done}/{self.spec.epochs} done, "
                           f"step {self._global_step}" + (f": {means}" if means else "") + saved)

    def _record(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._epoch_metrics.setdefault(key, []).append(float(value))
        self._metrics.append(
            {"step": self._global_step, "epoch": self._epochs_done, "session": self._session,
             "time": self._clock.time(), **{k: float(v) for k, v in metrics.items()}}
        )

    def _boundary(self, *, where: str, at_epoch_end: bool = False, last: bool = False) -> None:
        """Save when due or asked; stop when asked. ``last``: after an epoch's last batch,
        where a periodic save would only precede the epoch-end save at the same step."""
        self._saver.refresh_lease()
        controls = self.controls
        save_s = self._saver.save_s if self._saver.save_s is not None else self._save_s
        if controls.deadline.must_save_now(self._clock.time(), step_s=self._step_s,
                                           save_s=save_s):
            controls.request_stop("deadline")
        reason = None if last and self.spec.checkpoint.at_epoch_end else save_due(
            self.spec.checkpoint,
            steps_since_save=self._steps_since_save,
            seconds_since_save=self._clock.monotonic() - self._last_save_at,
            at_epoch_end=at_epoch_end,
            save_cost_s=self._cost.cost_s,
            writer_busy=self._saver.busy,
        )
        if reason is None and controls.checkpoint_requested:
            reason = "requested"
        if reason is None and controls.stop_reason is not None and self._has_unsaved_work():
            reason = controls.stop_reason
        if reason is not None:
            controls.checkpoint_requested = False
            self._save(where=where, reason=reason)
        if controls.stop_reason is not None:
            raise StopTraining(controls.stop_reason)

    def _has_unsaved_work(self) -> bool:
        return self._steps_since_save > 0 or (self._saver.last is None and not self._resumed)

    def _save(self, *, where: str, reason: str) -> None:
        self._check_all_restored()
        self.progress.phase = "save"
        started = self._clock.monotonic()
        self._saver.ready()  # one save in flight at most: the buffers are free again
        state = live_state(self._tracked)
        nbytes, cuda = tensor_stats(state)
        mode = choose_mode(self.spec.checkpoint.snapshot, nbytes=nbytes, on_cuda=cuda,
                           can_fork=fork_available())
        payload = {"tracked": state, "rng": capture_rng()}
        if where == IN_EPOCH and self._epoch_rng is not None:
            payload[RNG_EPOCH] = self._epoch_rng
        ready = None
        if mode != FORK:  # RNG states too: a writer process reads them from shared buffers
            payload, ready = self._buffers.snapshot(payload)
        try:
            json.dumps(self._extras)
        except (TypeError, ValueError) as exc:
            raise HandleError(
                f"run.extras must hold JSON values (numbers, strings, lists, dicts): {exc}; "
                "convert tensors with .item() or .tolist() before storing them"
            ) from exc
        extras = {**self._extras, MICRO_BATCHES: self.micro_batches}
        meta = {"where": where, "reason": reason, "extras": extras,
                "tracked": sorted(self._tracked), "seed": self.spec.seed,
                "spec_fingerprint": self._fingerprint,
                "torch_version": torch.__version__}
        started_writer = self._saver.save(
            payload, step=self._global_step, epoch=self._epochs_done,
            batch=self._batch if where == IN_EPOCH else 0, meta=meta,
            expected_bytes=nbytes, step_s=self._step_s,
            mode=writer_mode(mode, on_cuda=cuda, nbytes=nbytes,
                             buffers=self._buffers), ready=ready,
            buffers=self._buffers,
            gradients_of=parameters_with_gradients(self._tracked) if mode == FORK else (),
        )
        self._steps_since_save = 0
        self._last_save_at = self._clock.monotonic()
        self.save_stalls.append(self._last_save_at - started)
        self._cost.observe_save(self.save_stalls[-1], setup=started_writer)
        self._after_save = True
        self.progress.phase = "train"

    def _start_epoch(self) -> None:
        """Restore the RNG as the saved run had it when this epoch began, and keep it.

        A mid-epoch checkpoint carries the RNG state of its epoch's start too, so
        code at the top of an epoch (a random augmentation strength, say) draws
        the same numbers on resume as it did the first time.
        """
        resume = self._resume
        if resume is not None and resume.where == IN_EPOCH and RNG_EPOCH in resume.payload:
            restore_rng(resume.payload[RNG_EPOCH])
        self._restore_rng_at(EPOCH_START)
        self._epoch_rng = capture_rng()

    def _restore_rng_at(self, where: str) -> None:
        resume = self._resume
        if resume is None or resume.where != where or "rng" not in resume.payload:
            return
        self._check_all_restored()
        restore_rng(resume.payload["rng"])
        self._resume = None  # resumed: from here on the run is like any other

    def _check_all_restored(self) -> None:
        if self._resume is None:
            return
        missing = sorted(set(self._resume.payload["tracked"]) - set(self._tracked))
        if missing:
            raise HandleError(
                f"checkpoint {self._resume.name} holds state for {missing}, which this run did "
                "not track; call run.track(...) with the same names before the first batch"
            )


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
