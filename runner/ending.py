"""How a session ends: its outcome recorded in ``state.json`` (lease released), the user
told, the :class:`RunResult` returned; and a session that could not start put back as it was
(docs/troubleshooting.md, "A run that stops before it starts")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colabrun.jobs.errors import ColabrunError, TrainingError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.results import storable_result
from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.restarts import Exit
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, holds, release
from colabrun.state.model import JobState, Status
from colabrun.state.transitions import abandon_session, end_session

#: exit codes of a finished run, by status (see docs/cli.md)
EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.STOPPED: 3}
#: how a training outcome ends the session
STATUS_OF = {Exit.COMPLETED: Status.COMPLETED, Exit.STOPPED: Status.STOPPED}


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


def finish(job: JobDir, spec: JobSpec, fence: Fence, outcome: Outcome, *, clock: Clock,
            console: Console) -> RunResult:
    """Record how the session ended, tell the user, and raise for failures."""
    if outcome.exit is Exit.FENCED:
        assert outcome.error is not None
        raise outcome.error
    status = STATUS_OF.get(outcome.exit, Status.FAILED)
    result, not_kept = storable_result(outcome.value)
    if not_kept and status is Status.COMPLETED:
        console.info(f"the training function's return value is not kept in state.json: "
                     f"{not_kept}; return JSON (numbers, strings, lists, dicts) to get it again "
                     "from a re-run")
    state = end(job, fence, status, outcome.detail, clock, result=result)
    if status is Status.STOPPED:
        latest = state.latest_checkpoint
        durable = (f"durable under the root: {latest.name}" if latest
                   else "nothing durable under the root yet")
        console.info(f"job {spec.name!r} stopped ({outcome.detail}) at step "
                     f"{state.progress.global_step}, {durable}; continue it with `colabrun "
                     f"resume {spec.name} --root {job.root}` (or re-run the same cell)")
    elif status is Status.FAILED:
        if isinstance(outcome.error, ColabrunError):
            raise outcome.error
        error = TrainingError(f"job {spec.name!r} failed: {outcome.detail}; fix the cause and "
                              "run it again (it resumes from the last checkpoint)")
        if outcome.exit_code:
            error.exit_code = outcome.exit_code
        raise error from outcome.error
    else:
        console.info(summary_line(state, job.path))
    return result_of(state, job.path, trained=True, value=outcome.value)


def end(job: JobDir, fence: Fence, status: Status, reason: str, clock: Clock, *,
         result: Any = None) -> JobState:
    """Close the session and release the lease, unless another runner took over."""

    def change(s: JobState) -> JobState:
        if not holds(s, fence):  # fenced: the job is someone else's now
            return s
        ended = end_session(s, status, reason=reason, now=clock.time(), result=result)
        return release(ended, fence, now=clock.time())

    return job.statefile.update(change)


def abandon(job: JobDir, fence: Fence, before: Status, error: BaseException, *,
             clock: Clock, console: Console) -> None:
    """Put back a job whose session failed in colabrun's own code (or was interrupted)
    before it could record its end: lease released, status as before the session."""
    reason = f"did not run: {type(error).__name__}: {error}".splitlines()[0]

    def change(s: JobState) -> JobState:
        if not holds(s, fence):  # fenced: the job is someone else's now
            return s
        undone = abandon_session(s, before=before, reason=reason, now=clock.time())
        return release(undone, fence, now=clock.time())

    try:
        current = job.statefile.read()
        if current is not None and holds(current, fence):  # else: nothing of ours to undo
            job.statefile.update(change)
    except Exception as exc:  # the error being raised says more
        console.warn(f"could not record that this run ended ({type(exc).__name__}: {exc}); "
                     "the next run takes the job over once its lease expires")


def result_of(state: JobState, job_dir: Path, *, trained: bool, value: Any = None) -> RunResult:
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
