"""Training one session: what runs in the worker process (or in-process when
``supervise`` is off). Finds the resume point, builds the handle, calls the
user's function, and says how it ended as an :class:`Outcome`, never raising
for the user's own errors: the caller records the outcome.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colabrun.jobs.entrypoint import resolve_entrypoint
from colabrun.jobs.errors import CheckpointError, ColabrunError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.platform import choose_device
from colabrun.runner.save.saver import Saver
from colabrun.runner.train.handle import EPOCH_START, PendingResume, ResumePoint, Run
from colabrun.runner.train.live import Controls, LiveProgress, StopTraining
from colabrun.runner.train.metrics import MetricsLog
from colabrun.runner.train.plan import plan_resume
from colabrun.runner.train.rng import seed_everything
from colabrun.runner.watch.restarts import Exit
from colabrun.state.checkpoints import CheckpointStore, parse_checkpoint_name
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, LeaseLost, check_fence
from colabrun.state.model import CheckpointRecord, JobState
from colabrun.state.transitions import learn_timing, note_session, reconcile_checkpoints


@dataclass(frozen=True)
class Outcome:
    """How a session's training ended.

    ``error`` is the exception itself when training ran in this process;
    ``exit_code`` the CLI exit code its error class carries.
    """

    exit: Exit
    detail: str = ""
    value: Any = None
    error: BaseException | None = None
    exit_code: int = 0


@dataclass(frozen=True)
class SessionContext:
    """What a training session needs besides the spec."""

    job: JobDir
    fence: Fence
    session: int
    clock: Clock
    console: Console
    on_point: Callable[[str], None]
    controls: Controls
    progress: LiveProgress
    micro_batches: int = 1
    search_path: tuple[Path, ...] = ()
    heartbeat_s: float = float("inf")
    upload_wait_s: float = 600.0
    on_progress: Callable[[LiveProgress], None] | None = None


def train_session(spec: JobSpec, ctx: SessionContext) -> Outcome:
    """Train until done, stopped, or failed; never raises for the user's errors."""
    ctx.console.deferred = True
    try:
        return _train_session(spec, ctx)
    finally:
        ctx.console.deferred = False
        ctx.console.flush_log()


def _train_session(spec: JobSpec, ctx: SessionContext) -> Outcome:
    run: Run | None = None
    try:
        train = resolve_entrypoint(spec.entrypoint, search_path=ctx.search_path)
        device, note = choose_device(spec)
        if note:
            ctx.console.warn(note)
        state = ctx.job.statefile.read()
        assert state is not None
        ctx.job.claim_local(state.created_at)
        ctx.progress.phase = "setup"
        holder: list[Run] = []

        def found(result: Found) -> ResumePoint | None:
            resume, failed, record, load_s = result

            def note(s: JobState) -> JobState:
                now = ctx.clock.time()
                s = note_session(reconcile_checkpoints(fenced(s, ctx.fence), failed=failed,
                                                       found=record, now=now),
                                 device=str(device), resumed_from=resume.name if resume else None,
                                 start_step=resume.step if resume else 0, now=now)
                return s if load_s is None else learn_timing(s, load_s=load_s, now=now)

            noted = ctx.job.statefile.update(note)
            announce(ctx.console, spec, noted, resume)
            if resume is not None and record is None:  # resumed from a copy the root lacks
                holder[0].saver.upload_later(resume.name)
            return resume

        # The checkpoint loads in the background while the user's function sets up.
        pending = PendingResume(
            lambda: find_resume_point(ctx.job, state, ctx.console, ctx.clock), found)
        run = _build_run(spec, ctx, state, pending, device)
        holder.append(run)
        seed_everything(spec.seed)
        torch.use_deterministic_algorithms(spec.deterministic, warn_only=True)
        with interrupts_request_stop(ctx.controls), _saver_closed(run):
            try:
                value = train(run)
                durable = run.close(ctx.upload_wait_s)
            except StopTraining as stop:  # the final save is made: wait for its upload
                durable = run.saver.finish(ctx.upload_wait_s) and run.saver.is_durable
                if durable:
                    return Outcome(Exit.STOPPED, stop.reason)
                return Outcome(Exit.STOPPED, f"{stop.reason}; {_not_uploaded(run, ctx)}")
        if not durable:
            return Outcome(Exit.STOPPED, f"training finished, but {_not_uploaded(run, ctx)}")
        ctx.job.release_local()
    except LeaseLost as exc:
        return Outcome(Exit.FENCED, str(exc), error=exc, exit_code=exc.exit_code)
    except torch.cuda.OutOfMemoryError as exc:
        return Outcome(Exit.OOM, f"CUDA out of memory: {exc}".splitlines()[0], error=exc,
                       exit_code=1)
    except ColabrunError as exc:
        return Outcome(Exit.FAILED, str(exc), error=exc, exit_code=exc.exit_code)
    except Exception as exc:
        ctx.console.info("".join(traceback.format_exception(exc)).rstrip())
        return Outcome(Exit.FAILED, f"the training function raised {type(exc).__name__}: {exc}",
                       error=exc, exit_code=1)
    return Outcome(Exit.COMPLETED, "completed", value=value)


def fenced(state: JobState, fence: Fence) -> JobState:
    """``state``, after checking this session still owns the job."""
    check_fence(state, fence)
    return state


def _not_uploaded(run: Run, ctx: SessionContext) -> str:
    last = run.last_checkpoint
    return (f"its last checkpoint ({last.name if last else '?'}) is only on this runtime's "
            f"disk, in {ctx.job.local.dir}: the root could not be written. Run the job again "
            "once the storage is back: it uploads it")


@contextmanager
def _saver_closed(run: Run) -> Iterator[None]:
    """Record the session and stop the run's uploader thread however training ends."""
    try:
        yield
    finally:
        try:
            run.settle()
        finally:
            run.saver.close()


def _build_run(spec: JobSpec, ctx: SessionContext, state: JobState,
               resume: PendingResume, device: torch.device) -> Run:
    metrics = MetricsLog(ctx.job.path, ctx.job.storage, ctx.job.local.dir.parent)

    def committed(record: CheckpointRecord) -> None:
        ctx.progress.last_save = record.name
        ctx.progress.last_save_at = ctx.clock.time()

    saver = Saver(ctx.job.local, ctx.job.store, ctx.job.statefile,
                  keep_last=spec.checkpoint.keep_last, fence=ctx.fence, clock=ctx.clock,
                  console=ctx.console, metrics=metrics, heartbeat_s=ctx.heartbeat_s,
                  on_committed=committed)
    return Run(spec=spec, device=device, saver=saver, metrics=metrics, clock=ctx.clock,
               resume=resume, session=ctx.session, on_point=ctx.on_point,
               on_epoch_end=ctx.console.info, controls=ctx.controls, progress=ctx.progress,
               micro_batches=ctx.micro_batches, save_s=state.timings.save_s,
               on_progress=ctx.on_progress)


Found = tuple[ResumePoint | None, list[str], CheckpointRecord | None, float | None]


def find_resume_point(job: JobDir, state: JobState, console: Console, clock: Clock) -> Found:
    """Load the newest checkpoint that verifies, warning about each one skipped.

    Returns:
        The resume point (``None``: fresh start), the names that failed
        verification, the record of the checkpoint resumed from, and the
        seconds its verification and load took.
    """
    plan = plan_resume(state.checkpoints, job.store.list_names())
    root_names = set(plan.candidates)
    failed: list[str] = []
    for store, name in _candidates(job, plan.candidates):
        started = clock.monotonic()
        try:
            manifest, payload = store.load_verified(name)
        except CheckpointError as exc:
            console.warn(f"skipping {exc}; falling back to an older checkpoint")
            if store is job.store:
                failed.append(name)
            continue
        load_s = clock.monotonic() - started
        point = ResumePoint(
            name=name, step=manifest.step, epochs_done=manifest.epoch, batch=manifest.batch,
            where=str(manifest.meta.get("where", EPOCH_START)), payload=payload,
            extras=dict(manifest.meta.get("extras", {})),
        )
        if store is job.local and name not in root_names:
            console.info(f"{name} is newer on this runtime's disk than under the root: "
                         "resuming from the local copy (it is uploaded with the next save)")
        return point, failed, manifest.record() if store is job.store else None, load_s
    if plan.candidates:
        console.warn("no checkpoint verified: starting from scratch (the unverifiable ones "
                     "are kept for inspection)")
    return None, failed, None, None


def _candidates(job: JobDir, root_names: Iterable[str]
                ) -> list[tuple[CheckpointStore, str]]:
    """Root and local checkpoints, newest first; on a tie the local copy (faster)."""
    keyed = []
    for store, names, local in ((job.store, root_names, 0), (job.local, job.local.list_names(), 1)):
        for name in names:
            key = parse_checkpoint_name(name)
            if key is not None:
                keyed.append(((key[0], key[1], local, key[2]), store, name))
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [(store, name) for _, store, name in keyed]


def announce(console: Console, spec: JobSpec, state: JobState, resume: ResumePoint | None
             ) -> None:
    """Say plainly whether this is a fresh start or a resume, and from where."""
    session = len(state.sessions)
    if resume is None:
        console.info(f"job {spec.name!r}: no checkpoint yet, fresh start "
                     f"(session {session}, {spec.epochs} epochs)")
        return
    console.info(f"job {spec.name!r}: resuming from {resume.name} (epoch {resume.epochs_done}, "
                 f"batch {resume.batch}, step {resume.step}; session {session})")


@contextmanager
def interrupts_request_stop(controls: Controls) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks for a save and a clean stop, a second stops at once.

    Only in the main thread (where Python delivers signals); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        controls.interrupts += 1
        if controls.interrupts > 1:
            raise KeyboardInterrupt
        controls.request_stop("interrupted")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def search_path_of(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Folders as a tuple (picklable, for the worker)."""
    return tuple(Path(p) for p in paths)
