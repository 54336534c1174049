"""One session of a job: open its folder, take its lease, train, record how it ended.

The edge that ties the pure decisions (transitions, lease verdicts) to the
folder. It runs in the foreground: on Colab a busy cell is what keeps the
runtime (docs/colab.md#limits). The training itself runs in a supervised worker
process (:mod:`colabrun.runner.watch.supervisor`), or in this process when the spec says
``supervise: false``. A job of several ranks runs them in the processes its
``distributed`` section and this runtime's GPUs allow (:func:`session_layout`), each a
supervised worker; in this process, all as virtual ranks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO, cast

import cloudpickle

from colabrun.jobs.entrypoint import resolve_entrypoint
from colabrun.jobs.errors import EntrypointError, SpecError
from colabrun.jobs.spec import JobSpec
from colabrun.runner import knobs
from colabrun.runner.clock import Clock, SystemClock
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView, ViewStream, wants_bar
from colabrun.runner.dist.layout import Layout, layout_problem, plan_layout, visible_gpus
from colabrun.runner.ending import RunResult, abandon, finish, result_of, summary_line
from colabrun.runner.faults import hook_from_environment
from colabrun.runner.opening import clear_leftovers, open_state, take_and_begin
from colabrun.runner.platform import (
    detect_platform,
    is_colab,
    pid_alive,
    runtime_id,
    runtime_started_at,
)
from colabrun.runner.train.live import Controls, LiveProgress
from colabrun.runner.train.training import Outcome, SessionContext, train_session
from colabrun.runner.watch.deadline import UNMEASURED_SAVE_S, Deadline, budget_s
from colabrun.runner.watch.supervisor import Supervisor
from colabrun.runner.watch.takeover import wait_for_lease
from colabrun.runner.watch.worker_process import WorkerProcess
from colabrun.state.hooks import no_hook
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import (
    Fence,
    Owner,
    fence_of,
)
from colabrun.state.model import JobState
from colabrun.state.storage import Storage


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
    upload_wait_s: float = 600.0,
    progress: bool | None = None,
) -> RunResult:
    """Start or continue ``spec`` under ``root`` and train until done.

    Args:
        spec: the job.
        root: the folder holding all jobs.
        force: continue even if the spec changed what defines the model or data.
        clock: the injected clock (real by default).
        storage: the storage edge (real by default).
        console: where messages go (stdout by default).
        on_point: a fault-injection hook; a Python hook trains in this process.
        search_path: folders to import the entrypoint from (e.g. the cwd).
        takeover: take the job over even from a live-looking lease (the user
            knows that runtime is gone).
        upload_wait_s: how long the end of training waits for the last upload.
        progress: draw per-epoch progress bars (default: on a terminal or in a notebook).

    Returns:
        The result; ``trained`` is False when the job was already complete.

    Raises:
        SpecError, EntrypointError: bad input; nothing was written.
        StateCorrupt: ``state.json`` does not parse; see ``colabrun repair``.
        TrainingError: the training failed; the job is ``failed``.
        LeaseHeld: another live runner owns the job; nothing was changed.
        LeaseLost: another runner took the job over mid-run; this one stopped writing.
    """
    clock = clock or SystemClock()
    storage = storage or Storage(sleep=clock.sleep)
    view, console = _display(progress, console, storage)
    resolve_entrypoint(spec.entrypoint, search_path=search_path)  # fail before any write
    supervised = spec.supervise and on_point is None
    live = LiveProgress()
    job = _job_dir(spec, root, storage, on_point=on_point, supervised=supervised, live=live)
    state, on_disk = open_state(job, spec, force=force, clock=clock, console=console)
    if state.is_done_for(spec.epochs):
        return _already_done(job, spec, state, on_disk=on_disk, console=console)
    _say_if_epochs_lowered(spec, state, console)
    _warn_if_not_durable(root, console)
    layout = session_layout(spec, supervised=supervised)  # refused before any worker starts
    return _run_session(job, spec, state, on_disk=on_disk, supervised=supervised,
                        takeover=takeover, clock=clock, console=console, live=live, view=view,
                        search_path=tuple(Path(p) for p in search_path),
                        upload_wait_s=upload_wait_s, layout=layout)


def _run_session(job: JobDir, spec: JobSpec, state: JobState, *, on_disk: bool,
                 supervised: bool, takeover: bool, clock: Clock, console: Console,
                 live: LiveProgress, view: ProgressView, search_path: tuple[Path, ...],
                 upload_wait_s: float, layout: Layout) -> RunResult:
    """Take the job (waiting out a dead runtime's lease), train one session, record its end.

    A failure of colabrun's own (a folder that cannot be written, a lost mount) after the
    lease was taken puts the job back as it was: no lease held, not ``running``.
    """
    # imports torch while the lease is waited for and taken (docs/colab.md#a-fresh-runtime)
    warm = WorkerProcess.start() if supervised else None
    try:
        dead = None
        if on_disk and not takeover:  # another runtime's live-looking lease: alive, or gone?
            dead = wait_for_lease(state, job.statefile.read, _me(), clock=clock,
                                  console=console, is_alive=pid_alive)
        deadline = _deadline(spec, clock)
        taken: list[Fence] = []  # set once the lease is in the state being written
        try:
            begun = take_and_begin(job, spec, _me(), None if on_disk else state,
                                    takeover=takeover, dead=dead, clock=clock,
                                    console=console, deadline_at=deadline.ends_at, taken=taken)
            ctx = _start_session(job, spec, begun, deadline, clock=clock, console=console,
                                 live=live, view=view, search_path=search_path,
                                 upload_wait_s=upload_wait_s, layout=layout)
            outcome = _train(spec, ctx, supervised=supervised, view=view, warm=warm)
        except BaseException as exc:
            if taken:
                abandon(job, taken[0], state.status, exc, clock=clock, console=console)
            raise
    finally:
        if warm is not None:
            warm.discard()
    return finish(job, spec, ctx.fence, outcome, clock=clock, console=console)


def _already_done(job: JobDir, spec: JobSpec, state: JobState, *, on_disk: bool,
                  console: Console) -> RunResult:
    """A completed job asked for no more epochs: say so, train nothing."""
    if not on_disk:  # rebuilt from its checkpoints: keep what was learned
        job.statefile.write(state)
    _say_if_epochs_lowered(spec, state, console)
    console.info(summary_line(state, job.path))
    return result_of(state, job.path, trained=False, value=state.result)


def _say_if_epochs_lowered(spec: JobSpec, state: JobState, console: Console) -> None:
    done = state.progress.epochs_done
    if spec.epochs < done:
        console.info(f"job {spec.name!r} has trained {done} epochs already; the spec's "
                     f"epochs: {spec.epochs} asks for fewer, and a job never trains backwards: "
                     f"it keeps its epoch-{done} model (to train {spec.epochs} epochs from "
                     "scratch, use a new job name)")
    elif spec.epochs < state.progress.epochs_total:
        console.info(f"job {spec.name!r}: epochs lowered from {state.progress.epochs_total} "
                     f"to {spec.epochs} ({done} done)")


def _display(progress: bool | None, console: Console | None, storage: Storage
             ) -> tuple[ProgressView, Console]:
    """The progress bars, and the console that prints above them (unless one is given)."""
    out = console.out if console else None
    view = ProgressView(enabled=wants_bar(progress, out), out=out)
    console = console or Console(storage=storage,
                                 out=cast(TextIO, ViewStream(view)) if view.enabled else None)
    return view, console


def _job_dir(spec: JobSpec, root: Path, storage: Storage, *,
             on_point: Callable[[str], None] | None, supervised: bool,
             live: LiveProgress) -> JobDir:
    """The job's folder, with the fault hook of this process (a test's, or the
    environment's when the training runs here)."""
    env_hook = hook_from_environment(progress=live)  # validates COLABRUN_KILL_AT too
    if supervised:
        _check_picklable(spec)
        env_hook = None  # the worker builds its own: kills are meant for the training
    return JobDir(root, spec.name, storage=storage, on_point=on_point or env_hook or no_hook,
                  local_root=Path(spec.local_dir) if spec.local_dir else None)


def _me() -> Owner:
    """This runner: its runtime, host and process."""
    return Owner(runtime_id=runtime_id(), host=socket.gethostname(), pid=os.getpid())


def _start_session(job: JobDir, spec: JobSpec, state: JobState, deadline: Deadline, *,
                   clock: Clock, console: Console, live: LiveProgress, view: ProgressView,
                   search_path: tuple[Path, ...], upload_wait_s: float,
                   layout: Layout) -> SessionContext:
    """Clear what a dead session left, say how the ranks run, and say what the session's
    training needs."""
    clear_leftovers(job)
    _warn_if_budget_spent(spec, deadline, clock, console)
    line = layout_line(layout)
    if line:
        console.info(line)
    return SessionContext(
        job=job, fence=fence_of(state), session=len(state.sessions) - 1, clock=clock,
        console=console, on_point=job.statefile.on_point,
        controls=Controls(deadline), progress=live,
        search_path=search_path, heartbeat_s=spec.lease_s / 4,
        upload_wait_s=upload_wait_s, on_progress=lambda p: view.update(
            epoch=p.epoch, epochs_total=p.epochs_total, batch=p.batch,
            batches_in_epoch=p.batches_in_epoch, metrics=p.metrics), layout=layout)


def session_layout(spec: JobSpec, *, supervised: bool) -> Layout:
    """How this session runs the job's ranks: in the processes the spec's ``distributed``
    section asks for on this runtime's GPUs (:func:`plan_layout`) when supervised; in this
    process, all as virtual ranks, when not.

    Args:
        spec: the job.
        supervised: whether the training runs in supervised workers.

    Returns:
        The leader's layout.

    Raises:
        SpecError: this runtime cannot run the processes asked for
            (:func:`~colabrun.runner.dist.layout.layout_problem`: more NCCL processes than
            GPUs).
    """
    if not supervised:
        return Layout(ranks=spec.distributed.ranks, processes=1)
    gpus = visible_gpus()
    layout = plan_layout(spec.distributed, gpus=gpus, device=spec.device)
    problem = layout_problem(layout, gpus, device=spec.device)
    if problem is not None:
        raise SpecError(f"cannot start job {spec.name!r}: {problem}")
    return layout


def layout_line(layout: Layout) -> str | None:
    """What the console says of ``layout`` as the session starts (``training 2 ranks in 2
    processes (gloo)``).

    Args:
        layout: the session's layout.

    Returns:
        The line; ``None`` for one rank, with nothing to say.
    """
    if layout.processes > 1:
        return (f"training {layout.ranks} ranks in {layout.processes} processes "
                f"({layout.backend})")
    if layout.ranks > 1:
        return f"training {layout.ranks} ranks as virtual ranks in 1 process"
    return None


def _train(spec: JobSpec, ctx: SessionContext, *, supervised: bool,
           view: ProgressView, warm: WorkerProcess | None = None) -> Outcome:
    """Train the session: in supervised workers (the first one ``warm``, started
    ahead; one per process of ``ctx.layout``), or in this process."""
    if supervised:
        return Supervisor(spec, ctx.job, fence=ctx.fence, session=ctx.session,
                          clock=ctx.clock, console=ctx.console,
                          deadline=ctx.controls.deadline, search_path=ctx.search_path,
                          view=view, warm=warm, layout=ctx.layout).run()
    try:
        return train_session(spec, ctx)
    finally:
        view.close()


def _deadline(spec: JobSpec, clock: Clock) -> Deadline:
    """This runtime's deadline, from the platform (or the spec) and the runtime's start."""
    platform = detect_platform() if spec.platform == "auto" else spec.platform
    budget = budget_s(platform, spec_budget_s=spec.budget_s)
    scale = knobs.time_scale()
    started = runtime_started_at(platform, now=clock.time())
    return Deadline.of(started_at=started, budget=None if budget is None else budget / scale,
                       margin_s=spec.deadline_margin_s / scale,
                       assumed_save_s=UNMEASURED_SAVE_S / scale)


def _check_picklable(spec: JobSpec) -> None:
    """The worker gets the spec cloudpickled: say so now if it cannot be."""
    try:
        cloudpickle.dumps(spec)
    except Exception as exc:
        raise EntrypointError(
            f"job {spec.name!r}: the training function cannot be sent to the worker process "
            f"({type(exc).__name__}: {exc}); it probably uses an object that cannot be "
            "pickled (an open file, a lock, a live DataLoader) from an enclosing scope: create "
            "it inside the function, or set supervise: false to train in this process"
        ) from exc


def _warn_if_budget_spent(spec: JobSpec, deadline: Deadline, clock: Clock,
                          console: Console) -> None:
    left = deadline.time_left(clock.time())
    needed = deadline.needed_s(step_s=None, save_s=None)
    if left is None or left > needed:
        return
    if spec.budget_s is not None:
        console.warn(f"this runtime's budget looks spent already: {left:.0f} s left of the "
                     f"spec's budget_s ({spec.budget_s:g} s, counted from the runtime's start), "
                     f"and the final save keeps {needed:.0f} s free; the job will stop at its "
                     "first step. Raise budget_s, or lower deadline_margin_s")
        return
    console.warn(f"this runtime's budget looks spent already ({left:.0f} s left by the "
                 "platform's limit counted from the runtime's start); the job will stop "
                 "at its first step. If that is wrong, set budget_s or platform: local")


def _warn_if_not_durable(root: Path, console: Console) -> None:
    if is_colab() and not str(root).startswith("/content/drive"):
        console.warn(f"the root {root} is on this runtime's disk, which dies with it: mount "
                     "Google Drive (drive.mount('/content/drive')) to keep checkpoints")


def resume_job(
    name: str, *, root: Path, search_path: Iterable[Path] = (), **kwargs: Any
) -> RunResult:
    """Continue job ``name`` from its folder alone (a fresh runtime needs nothing else).

    Raises:
        JobNotFound: no such job under ``root``.
        EntrypointError: the job trains a function that only a notebook or spec file defines.
    """
    job = JobDir(root, name, storage=kwargs.get("storage"))
    spec = job.read_spec()
    ref = spec.entrypoint_ref
    if ref.startswith(("__main__:", "_colabrun_spec_")) or "<" in ref:
        raise EntrypointError(
            f"job {name!r} trains a function defined in a notebook, script or .py spec "
            f"({ref}), which cannot be imported from here; resume it by running that cell or "
            "`colabrun run SPEC.py` again (it continues the job)"
        )
    return run_job(spec, root=root, search_path=search_path, **kwargs)
