"""Training one session: what runs in the worker process (or in-process when
``supervise`` is off). Finds the resume point, builds the handle, calls the
user's function, and says how it ended as an :class:`Outcome`, never raising
for the user's own errors: the caller records the outcome.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from colabrun.jobs.entrypoint import resolve_entrypoint
from colabrun.jobs.errors import ColabrunError
from colabrun.jobs.imports import import_hint, working_folders
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console, LogFlusher
from colabrun.runner.dist.group import Group, Joined, is_group_failure, opened
from colabrun.runner.dist.layout import Layout
from colabrun.runner.platform import choose_device, use_deterministic_algorithms
from colabrun.runner.save.pace import UPLOAD_BUDGET
from colabrun.runner.save.saver import Saver
from colabrun.runner.train.handle import Run
from colabrun.runner.train.live import Controls, LiveProgress, StopTraining, Wiring
from colabrun.runner.train.loop import Loop
from colabrun.runner.train.metrics import MetricsLog
from colabrun.runner.train.origin import origin_of
from colabrun.runner.train.report_sinks import default_sinks
from colabrun.runner.train.resume import Found, PendingResume, ResumePoint, find_resume_point
from colabrun.runner.train.rng import seed_everything
from colabrun.runner.train.save_guess import PROBE_FOLDER, SaveGuess, WriteProbe
from colabrun.runner.watch.interrupts import Interrupts
from colabrun.runner.watch.restarts import Exit
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
    #: the job's ranks and this process among the processes running them
    layout: Layout = Layout()
    #: host and port of the leader's c10d store, when the layout has several processes
    address: tuple[str, int] | None = None


def train_session(spec: JobSpec, ctx: SessionContext) -> Outcome:
    """Train until done, stopped, or failed; never raises for the user's errors.

    Args:
        spec: the job spec.
        ctx: what the session runs with.

    Returns:
        How training ended (the caller records it).
    """
    with LogFlusher(ctx.console):
        return _train_session(spec, ctx)


def _train_session(spec: JobSpec, ctx: SessionContext) -> Outcome:
    """:func:`_train`, with its errors translated into outcomes."""
    try:
        return _train(spec, ctx)
    except Exception as exc:
        if ctx.layout.is_grouped and is_group_failure(exc):  # a peer died or hung: restart
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(Exit.CRASHED, f"lost its group ({type(exc).__name__}: {first})",
                           error=exc, exit_code=1)
        return _translated(exc, ctx)


def _translated(exc: Exception, ctx: SessionContext) -> Outcome:
    """The outcome of a session that raised ``exc``."""
    if isinstance(exc, LeaseLost):
        return Outcome(Exit.FENCED, str(exc), error=exc, exit_code=exc.exit_code)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return Outcome(Exit.OOM, f"CUDA out of memory: {exc}".splitlines()[0], error=exc,
                       exit_code=1)
    if isinstance(exc, ColabrunError):
        return Outcome(Exit.FAILED, str(exc), error=exc, exit_code=exc.exit_code)
    ctx.console.info("".join(traceback.format_exception(exc)).rstrip())
    return Outcome(Exit.FAILED, _raised(exc, ctx.search_path), error=exc, exit_code=1)


def _raised(exc: Exception, search_path: tuple[Path, ...]) -> str:
    """What raised ``exc``: the training function (with what to do about an import that
    failed in it: docs/troubleshooting.md, "Import errors"), or colabrun's own code (named)."""
    own = origin_of(exc)
    if own is None:
        hint = import_hint(exc, folders=working_folders(search_path))
        return f"the training function raised {type(exc).__name__}: {exc}" + (
            f"; {hint}" if hint else "")
    where = f"{Path(own.filename).name}:{own.lineno}, in {own.name}"
    return (f"colabrun's own code raised {type(exc).__name__}: {exc} ({where}), not the "
            "training function; check the folder or setting it names")


def _train(spec: JobSpec, ctx: SessionContext) -> Outcome:
    """Set the session up, call the user's function, and release the local copies
    of a job completed."""
    train = resolve_entrypoint(spec.entrypoint, search_path=ctx.search_path)
    device, note = choose_device(spec)
    leader = ctx.layout.is_leader
    if note and leader:
        ctx.console.warn(note)
    state = ctx.job.statefile.read()
    assert state is not None
    if leader:  # the leader alone stages, saves, uploads and writes the state
        ctx.job.claim_local(state.created_at)
    ctx.progress.phase = "setup"
    with opened(_group(spec, ctx, device)) as group:
        device = _process_device(device, ctx.layout)
        sinks = default_sinks(ctx.job.path, ctx.job.root, ctx.job.name, ctx.console.warn) \
            if leader else None
        metrics = MetricsLog(ctx.job.path, ctx.job.storage, ctx.job.local.dir.parent,
                             on_synced=sinks)
        saver = _build_saver(spec, ctx, metrics)
        # The checkpoint loads in the background while the user's function sets up.
        record = partial(_record_session, spec, ctx, saver, str(device)) if leader \
            else _found_point
        pending = PendingResume(
            lambda: find_resume_point(ctx.job, state, ctx.console, ctx.clock), record)
        loop = _build_loop(spec, ctx, state, saver, metrics, pending, device, group)
        seed_everything(spec.seed)
        use_deterministic_algorithms(spec.deterministic)
        try:
            with interrupts_request_stop(ctx.controls), _saver_closed(loop, saver):
                outcome = _call(train, loop, saver, ctx)
        finally:
            metrics.close()  # after the last upload: the plot shows every step uploaded
    if outcome.exit is Exit.COMPLETED and leader:
        ctx.job.release_local()
    return outcome


def _group(spec: JobSpec, ctx: SessionContext, device: torch.device) -> Group:
    """The group this process trains in: joined with the job's other processes when the
    layout has several (docs/concepts.md#several-processes), else alone."""
    if not ctx.layout.is_grouped:  # one process: the spec's ranks, as virtual ranks
        return Group(Layout(ranks=spec.distributed.ranks, backend=ctx.layout.backend))
    if ctx.address is None:
        raise ColabrunError(f"job {spec.name!r}: process {ctx.layout.process} of "
                            f"{ctx.layout.processes} was started without the group's address")
    # twice the stall floor: a hung peer is the supervisor's to find (it dumps the stacks)
    return Joined(ctx.layout, ctx.address, setup_s=spec.watchdog.setup_s,
                  collective_s=2 * spec.watchdog.stall_floor_s,
                  device=_process_device(device, ctx.layout))


def _process_device(device: torch.device, layout: Layout) -> torch.device:
    """The device of this process: on CUDA with several processes, one GPU each."""
    if device.type != "cuda" or not layout.is_grouped:
        return device
    chosen = torch.device("cuda", layout.process % max(1, torch.cuda.device_count()))
    torch.cuda.set_device(chosen)
    return chosen


def _found_point(found: Found) -> ResumePoint | None:
    """A follower's resume point: the leader records the session and says where."""
    return found.point


def _call(train: Callable[[Run], Any], loop: Loop, saver: Saver, ctx: SessionContext
          ) -> Outcome:
    """Call the user's function with its handle; then wait for the uploads."""
    try:
        value = train(Run(loop))
        durable = loop.close(ctx.upload_wait_s)
    except StopTraining as stop:  # the final save is made: wait for its upload
        durable = saver.finish(ctx.upload_wait_s) and saver.is_durable
        detail = stop.reason if durable else f"{stop.reason}; {_not_uploaded(saver, ctx)}"
        return Outcome(Exit.STOPPED, detail)
    if not durable:
        return Outcome(Exit.STOPPED, f"training finished, but {_not_uploaded(saver, ctx)}")
    return Outcome(Exit.COMPLETED, "completed", value=value)


def _record_session(spec: JobSpec, ctx: SessionContext, saver: Saver, device: str,
                    found: Found) -> ResumePoint | None:
    """In the training thread, once the resume point is known: record the session and
    what the search learned, and say where training starts."""
    point = found.point

    def note(s: JobState) -> JobState:
        now = ctx.clock.time()
        s = note_session(reconcile_checkpoints(fenced(s, ctx.fence), failed=found.failed,
                                               found=found.record, now=now),
                         device=device, resumed_from=point.name if point else None,
                         start_step=point.step if point else 0, now=now)
        return s if found.load_s is None else learn_timing(s, load_s=found.load_s, now=now)

    noted = ctx.job.statefile.update(note)
    announce(ctx.console, spec, noted, point)
    if point is not None and found.record is None:  # resumed from a copy the root lacks
        saver.upload_later(point.name)
    return point


def fenced(state: JobState, fence: Fence) -> JobState:
    """``state``, after checking this session still owns the job.

    Raises:
        LeaseLost: another runner took the job over.
    """
    check_fence(state, fence)
    return state


def _not_uploaded(saver: Saver, ctx: SessionContext) -> str:
    last = saver.last
    return (f"its last checkpoint ({last.name if last else '?'}) is only on this runtime's "
            f"disk, in {ctx.job.local.dir}: the root could not be written. Run the job again "
            "once the storage is back: it uploads it")


@contextmanager
def _saver_closed(loop: Loop, saver: Saver) -> Iterator[None]:
    """Record the session and stop the saver's threads however training ends."""
    try:
        yield
    finally:
        try:
            # the function ended before needing its resume point: still wait for it (the
            # session is recorded then), its errors not raised (the function's outcome counts)
            with suppress(Exception):
                loop.resolve()
        finally:
            saver.close()


def upload_budget(max_overhead: float | None) -> float:
    """The share of training time uploads may cost: the checkpointing budget, which the
    adaptive cadence shares between each save and its upload (their costs add up)."""
    return UPLOAD_BUDGET if max_overhead is None else max_overhead


def _build_saver(spec: JobSpec, ctx: SessionContext, metrics: MetricsLog) -> Saver:
    def committed(record: CheckpointRecord) -> None:
        ctx.progress.last_save = record.name
        ctx.progress.last_save_at = ctx.clock.time()
        ctx.progress.saved = replace(ctx.progress.saved, newest_step=record.step)

    def uploaded(record: CheckpointRecord) -> None:
        ctx.progress.saved = replace(ctx.progress.saved, durable_step=record.step,
                                     durable_at=ctx.clock.time())

    return Saver(ctx.job.local, ctx.job.store, ctx.job.statefile,
                 keep_last=spec.checkpoint.keep_last, keep_best=spec.checkpoint.keep_best,
                 fence=ctx.fence, clock=ctx.clock,
                 console=ctx.console, metrics=metrics, heartbeat_s=ctx.heartbeat_s,
                 on_committed=committed, on_uploaded=uploaded, snapshot=spec.checkpoint.snapshot,
                 stamp={"seed": spec.seed, "spec_fingerprint": spec.fingerprint()},
                 upload_budget=upload_budget(spec.checkpoint.max_overhead))


def _build_loop(spec: JobSpec, ctx: SessionContext, state: JobState, saver: Saver,
                metrics: MetricsLog, resume: PendingResume, device: torch.device,
                group: Group) -> Loop:
    leader = ctx.layout.is_leader
    wiring = Wiring(session=ctx.session, on_point=ctx.on_point,
                    on_epoch_end=ctx.console.info if leader else None,
                    on_progress=ctx.on_progress, controls=ctx.controls, progress=ctx.progress,
                    micro_batches=ctx.micro_batches, save_s=state.timings.save_s,
                    save_guess=_save_guess(ctx, state) if leader else None)
    return Loop(spec=spec, device=device, saver=saver, metrics=metrics, clock=ctx.clock,
                resume=resume, wiring=wiring, group=group)


def _save_guess(ctx: SessionContext, state: JobState) -> SaveGuess | None:
    """For a job that never measured a save, on a runtime with a budget: the root's write
    speed, measured now in the background."""
    deadline = ctx.controls.deadline
    if state.timings.save_s is not None or deadline is None or deadline.ends_at is None:
        return None
    probe = WriteProbe(ctx.job.storage, ctx.job.store.dir / PROBE_FOLDER, ctx.clock).start()
    return SaveGuess(probe, deadline, ctx.clock, ctx.console.warn)


def announce(console: Console, spec: JobSpec, state: JobState, resume: ResumePoint | None
             ) -> None:
    """Say plainly whether this is a fresh start or a resume, and from where."""
    session = len(state.sessions)
    if resume is None:
        console.info(f"job {spec.name!r}: no checkpoint yet, fresh start "
                     f"(session {session}, {spec.epochs} epochs)")
        return
    console.info(f"job {spec.name!r}: resuming from {resume.name} (step {resume.step}, "
                 f"{where_in_epochs(resume.epochs_done, resume.batch, spec.epochs)}; "
                 f"session {session})")


def where_in_epochs(epochs_done: int, batch: int, epochs: int) -> str:
    """Where a resume starts, counted as the epoch lines count (from 1). Pure."""
    if epochs_done >= epochs:
        return f"after epoch {epochs_done}/{epochs}"
    if batch == 0:
        return f"start of epoch {epochs_done + 1}/{epochs}"
    return f"epoch {epochs_done + 1}/{epochs} from batch {batch}"


@contextmanager
def interrupts_request_stop(controls: Controls) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks for a save and a clean stop, a second stops at once.

    The supervisor's handler, :class:`~colabrun.runner.watch.interrupts.Interrupts`, with
    this reaction; only in the main thread (where Python delivers signals), elsewhere a no-op.

    Args:
        controls: where the stop request goes; its ``interrupts`` counts them.

    Raises:
        KeyboardInterrupt: from the second interrupt, in the main thread.
    """

    def on_interrupt(count: int) -> None:
        controls.interrupts += 1  # the controls' own count: they may outlive one handler
        if controls.interrupts > 1:
            raise KeyboardInterrupt
        controls.request_stop("interrupted")

    with Interrupts(on_interrupt):
        yield
