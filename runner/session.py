"""One session of a job: open its folder, decide where to resume, train, record.

This is the edge that ties the pure decisions (resume plan, transitions) to
the folder, the user's function and the console. It runs in the foreground:
on Colab a busy cell is what keeps the runtime (COLAB.md fact 3).
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jobs.entrypoint import resolve_entrypoint
from jobs.errors import (
    CheckpointError,
    ColabrunError,
    EntrypointError,
    SpecMismatch,
    TrainingError,
)
from jobs.spec import JobSpec, changed_defining_fields
from runner.clock import Clock, SystemClock
from runner.console import Console
from runner.faults import hook_from_environment
from runner.handle import EPOCH_START, ResumePoint, Run
from runner.jobdir import JobDir
from runner.metrics import MetricsLog
from runner.plan import plan_resume
from runner.platform import choose_device, pid_alive, runtime_id
from runner.rng import seed_everything
from runner.saving import Saver
from state.lease import LeaseHeld, Owner, Verdict, check_fence, held_message, judge, release, take
from state.model import JobState, Lease, Status
from state.storage import Storage
from state.transitions import (
    begin_session,
    end_session,
    learn_timing,
    new_job,
    set_epochs_total,
    set_fingerprint,
)

#: exit codes of a finished run, by status (see docs/cli.md)
EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.STOPPED: 3}


@dataclass(frozen=True)
class RunResult:
    """What a run ended with."""

    name: str
    job_dir: Path
    status: Status
    reason: str | None
    epochs_done: int
    epochs_total: int
    global_step: int
    last_checkpoint: str | None
    trained: bool
    value: Any = None

    @property
    def exit_code(self) -> int:
        """0 completed, 1 failed, 3 stopped (run again to continue)."""
        return EXIT_CODES.get(self.status, 1)


def _no_hook(point: str) -> None:
    return None


def run_job(
    spec: JobSpec,
    *,
    root: Path,
    force: bool = False,
    clock: Clock | None = None,
    storage: Storage | None = None,
    console: Console | None = None,
    on_point: Callable[[str], None] | None = None,
    search_path: Iterable[Path] = (),
    takeover: bool = False,
) -> RunResult:
    """Start or continue ``spec`` under ``root`` and train until done.

    Args:
        spec: the job.
        root: the folder holding all jobs.
        force: continue even if the spec changed what defines the model or data.
        clock: the injected clock (real by default).
        storage: the storage edge (real by default).
        console: where messages go (stdout by default).
        on_point: fault-injection hook (``COLABRUN_KILL_AT`` by default).
        search_path: folders to import the entrypoint from (e.g. the cwd).
        takeover: take the job over even from a live-looking lease (the user
            knows that runtime is gone).

    Returns:
        The result; ``trained`` is False when the job was already complete.

    Raises:
        SpecError, EntrypointError: bad input; nothing was written.
        StateCorrupt: ``state.json`` does not parse; see ``colabrun repair``.
        TrainingError: the training function raised; the job is ``failed``.
        LeaseHeld: another live runner owns the job; nothing was changed.
        LeaseLost: another runner took the job over mid-run; this one stopped writing.
    """
    clock = clock or SystemClock()
    storage = storage or Storage(sleep=clock.sleep)
    console = console or Console(storage=storage)
    hook = on_point or hook_from_environment() or _no_hook
    train = resolve_entrypoint(spec.entrypoint, search_path=search_path)
    device, device_note = choose_device(spec)
    job = JobDir(root, spec.name, storage=storage, on_point=hook)
    state = _open_state(job, spec, force=force, clock=clock, console=console)
    if state.is_done_for(spec.epochs):
        console.info(summary_line(state, job.path))
        return _result(state, job.path, trained=False)
    if device_note:
        console.warn(device_note)
    me = Owner(runtime_id=runtime_id(), host=socket.gethostname(), pid=os.getpid())
    generation = _acquire(job, spec, me, takeover=takeover, clock=clock, console=console)
    resume = _find_resume_point(job, state, console, clock)

    def begin(s: JobState) -> JobState:
        check_fence(s, generation)
        return begin_session(set_epochs_total(s, spec.epochs, now=clock.time()),
                             runtime_id=me.runtime_id, host=me.host, pid=me.pid,
                             device=str(device), resumed_from=resume.name if resume else None,
                             now=clock.time())

    state = job.statefile.update(begin)
    job.store.discard_uncommitted()
    job.statefile.discard_stale_temporaries()
    _announce(console, spec, state, resume)
    return _train(train, spec, job, state, resume, device=device, clock=clock, console=console,
                  hook=hook)


def _acquire(job: JobDir, spec: JobSpec, me: Owner, *, takeover: bool, clock: Clock,
             console: Console) -> int:
    """Take the job's lease (or raise :class:`LeaseHeld`); return the new generation."""
    seen: list[tuple[Verdict, Lease | None]] = []

    def change(s: JobState) -> JobState:
        verdict = judge(s.lease, me, now=clock.time(), is_alive=pid_alive)
        if verdict is Verdict.HELD and not takeover:
            assert s.lease is not None
            raise LeaseHeld(held_message(s, s.lease, now=clock.time()))
        seen.append((verdict, s.lease))
        return take(s, me, now=clock.time(), duration_s=spec.lease_s)

    state = job.statefile.update(change)
    verdict, old = seen[-1]
    if old is not None and verdict is not Verdict.MINE:
        console.warn(f"took job {spec.name!r} over from pid {old.pid} on {old.host} "
                     f"(runtime {old.owner}): {verdict.value.replace('_', ' ')}")
    return state.generation


def _open_state(
    job: JobDir, spec: JobSpec, *, force: bool, clock: Clock, console: Console
) -> JobState:
    """The job's state: created, rebuilt when lost, or checked against the spec."""
    job.storage.makedirs(job.path)
    console.attach_log(job.path)
    state = job.statefile.read()
    if state is None:
        state = _create_state(job, spec, clock=clock, console=console)
    differing = changed_defining_fields(state.defining, spec)
    if differing and not force:
        details = "; ".join(f"{f}: {state.defining.get(f)!r} -> {spec.defining_fields()[f]!r}"
                            for f in differing)
        raise SpecMismatch(
            f"job {spec.name!r} under {job.root} was created with other {', '.join(differing)} "
            f"({details}); use a new job name, or pass --force (force=True) to continue "
            "its checkpoints with the new values"
        )
    if differing:
        console.warn(f"--force: continuing job {spec.name!r} with changed {', '.join(differing)}")
        state = job.statefile.update(lambda s: set_fingerprint(
            s, spec.fingerprint(), spec.defining_fields(), now=clock.time()))
    job.write_spec(spec)
    return state


def _create_state(job: JobDir, spec: JobSpec, *, clock: Clock, console: Console) -> JobState:
    if job.store.list_names():
        state, problems = job.rebuild_state(spec, now=clock.time())
        console.warn(f"{job.statefile.path} was missing (a write that never reached the "
                     f"storage?); rebuilt it from {len(state.checkpoints)} committed checkpoints")
        for problem in problems:
            console.warn(f"skipped {problem}")
    else:
        state = new_job(name=spec.name, fingerprint=spec.fingerprint(),
                        defining=spec.defining_fields(), epochs_total=spec.epochs,
                        now=clock.time())
    job.statefile.write(state)
    return state


def _find_resume_point(
    job: JobDir, state: JobState, console: Console, clock: Clock
) -> ResumePoint | None:
    """Load the newest checkpoint that verifies, warning about each one skipped."""
    plan = plan_resume(state.checkpoints, job.store.list_names())
    for name in plan.candidates:
        started = clock.monotonic()
        try:
            manifest = job.store.verify(name)
            payload = job.store.load_payload(name)
        except CheckpointError as exc:
            console.warn(f"skipping {exc}; falling back to an older checkpoint")
            continue
        _learn_load_time(job, clock, clock.monotonic() - started)
        return ResumePoint(
            name=name, step=manifest.step, epochs_done=manifest.epoch, batch=manifest.batch,
            where=str(manifest.meta.get("where", EPOCH_START)), payload=payload,
            extras=dict(manifest.meta.get("extras", {})),
        )
    if plan.candidates:
        console.warn("no checkpoint verified: starting from scratch (the unverifiable ones "
                     "are kept for inspection)")
    return None


def _learn_load_time(job: JobDir, clock: Clock, load_s: float) -> None:
    job.statefile.update(lambda s: learn_timing(s, load_s=load_s, now=clock.time()))


def _announce(console: Console, spec: JobSpec, state: JobState, resume: ResumePoint | None
              ) -> None:
    session = len(state.sessions)
    if resume is None:
        console.info(f"job {spec.name!r}: no checkpoint yet, fresh start "
                     f"(session {session}, {spec.epochs} epochs)")
        return
    console.info(f"job {spec.name!r}: resuming from {resume.name} (epoch {resume.epochs_done}, "
                 f"batch {resume.batch}, step {resume.step}; session {session})")


def _train(
    train: Callable[..., Any],
    spec: JobSpec,
    job: JobDir,
    state: JobState,
    resume: ResumePoint | None,
    *,
    device: torch.device,
    clock: Clock,
    console: Console,
    hook: Callable[[str], None],
) -> RunResult:
    generation = state.generation
    saver = Saver(job.store, job.statefile, keep_last=spec.checkpoint.keep_last,
                  generation=generation, clock=clock, heartbeat_s=spec.lease_s / 4)
    run = Run(spec=spec, device=device, saver=saver, metrics=MetricsLog(job.path, job.storage),
              clock=clock, resume=resume, session=len(state.sessions) - 1, on_point=hook,
              on_epoch_end=console.info)
    seed_everything(spec.seed)
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=True)
    try:
        value = train(run)
        run.close()
    except KeyboardInterrupt:
        _end(job, generation, Status.STOPPED, "interrupted", clock)
        console.info(f"job {spec.name!r} interrupted; continue it with `colabrun resume "
                     f"{spec.name} --root {job.root}`")
        raise
    except ColabrunError as exc:
        _end(job, generation, Status.FAILED, str(exc), clock)
        raise
    except Exception as exc:
        reason = f"the training function raised {type(exc).__name__}: {exc}"
        _end(job, generation, Status.FAILED, reason, clock)
        console.info("".join(traceback.format_exception(exc)).rstrip())
        raise TrainingError(f"job {spec.name!r} failed: {reason}; fix the code and run it again "
                            "(it resumes from the last checkpoint)") from exc
    state = _end(job, generation, Status.COMPLETED, "completed", clock)
    console.info(summary_line(state, job.path))
    return _result(state, job.path, trained=True, value=value)


def _end(job: JobDir, generation: int, status: Status, reason: str, clock: Clock) -> JobState:
    """Close the session and release the lease, unless another runner took over."""

    def change(s: JobState) -> JobState:
        if s.generation != generation:  # fenced: the job is someone else's now
            return s
        ended = end_session(s, status, reason=reason, now=clock.time())
        return release(ended, generation, now=clock.time())

    return job.statefile.update(change)


def _result(state: JobState, job_dir: Path, *, trained: bool, value: Any = None) -> RunResult:
    latest = state.latest_checkpoint
    return RunResult(
        name=state.name, job_dir=job_dir, status=state.status, reason=state.reason,
        epochs_done=state.progress.epochs_done, epochs_total=state.progress.epochs_total,
        global_step=state.progress.global_step,
        last_checkpoint=latest.name if latest else None, trained=trained, value=value,
    )


def summary_line(state: JobState, job_dir: Path) -> str:
    """One line: the job, its status, progress and newest checkpoint."""
    latest = state.latest_checkpoint
    where = f", last checkpoint {latest.name}" if latest else ""
    return (f"job {state.name!r} {state.status.value}: {state.progress.epochs_done}/"
            f"{state.progress.epochs_total} epochs, step {state.progress.global_step}"
            f"{where} ({job_dir})")


def resume_job(
    name: str, *, root: Path, search_path: Iterable[Path] = (), **kwargs: Any
) -> RunResult:
    """Continue job ``name`` from its folder alone (a fresh runtime needs nothing else).

    Raises:
        JobNotFound: no such job under ``root``.
    """
    job = JobDir(root, name, storage=kwargs.get("storage"))
    spec = job.read_spec()
    if spec.entrypoint_ref.startswith("__main__:") or "<" in spec.entrypoint_ref:
        raise EntrypointError(
            f"job {name!r} trains a function defined in a notebook or script "
            f"({spec.entrypoint_ref}), which cannot be imported from here; resume it by "
            "running that cell again (runner.run(spec) continues the job)"
        )
    return run_job(spec, root=root, search_path=search_path, **kwargs)


