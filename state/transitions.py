"""Pure transitions of :class:`colabrun.state.model.JobState`; each returns a new state.

Illegal status moves raise :class:`IllegalTransition`, so a bug cannot, say,
mark a failed job completed. No function here touches a disk or a clock: the
caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from colabrun.jobs.errors import ColabrunError
from colabrun.state.model import CheckpointRecord, JobState, Progress, Session, Status, Timings

#: status -> statuses it may move to.
LEGAL_MOVES: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.FAILED}),
    Status.RUNNING: frozenset({Status.RUNNING, Status.STOPPED, Status.COMPLETED, Status.FAILED}),
    Status.STOPPED: frozenset({Status.RUNNING}),
    Status.FAILED: frozenset({Status.RUNNING}),
    Status.COMPLETED: frozenset({Status.RUNNING}),
}

#: smoothing of learned timings: new = (1 - a) * old + a * observed
TIMING_SMOOTHING = 0.3


class IllegalTransition(ColabrunError, RuntimeError):
    """A status move that :data:`LEGAL_MOVES` forbids (a bug, not a user error)."""


def new_job(
    *, name: str, fingerprint: str, defining: dict[str, Any], epochs_total: int, now: float
) -> JobState:
    """The state of a job that was declared but never ran."""
    return JobState(
        name=name,
        spec_fingerprint=fingerprint,
        defining=defining,
        created_at=now,
        updated_at=now,
        progress=Progress(epochs_total=epochs_total),
    )


def move(state: JobState, status: Status, *, now: float, reason: str | None = None) -> JobState:
    """Change the status, or raise :class:`IllegalTransition`."""
    if status not in LEGAL_MOVES[state.status]:
        raise IllegalTransition(f"job {state.name!r}: cannot go from {state.status.value} "
                                f"to {status.value}")
    return state.model_copy(update={"status": status, "reason": reason, "updated_at": now})


def begin_session(
    state: JobState,
    *,
    runtime_id: str,
    host: str,
    pid: int,
    device: str,
    resumed_from: str | None,
    now: float,
    deadline_at: float | None = None,
) -> JobState:
    """Open a new session under the current generation (the lease's: see
    :func:`colabrun.state.lease.take`), closing a session left open by a crash."""
    state = _close_open_session(state, reason="lost (no clean end recorded)", now=now)
    generation = state.generation
    session = Session(
        index=len(state.sessions),
        runtime_id=runtime_id,
        host=host,
        pid=pid,
        device=device,
        generation=generation,
        started_at=now,
        start_step=state.progress.global_step,
        resumed_from=resumed_from,
        deadline_at=deadline_at,
    )
    state = move(state, Status.RUNNING, now=now)
    return state.model_copy(update={"sessions": (*state.sessions, session)})


def end_session(state: JobState, status: Status, *, reason: str, now: float,
                result: Any = None) -> JobState:
    """Close the open session and move the job to ``status`` with ``reason``; a completed
    job keeps ``result`` (its training function's return value, as JSON)."""
    state = _close_open_session(state, reason=reason, now=now)
    stored_reason = None if status is Status.COMPLETED else reason
    moved = move(state, status, now=now, reason=stored_reason)
    return moved.model_copy(update={"result": result}) if status is Status.COMPLETED else moved


def abandon_session(state: JobState, *, before: Status, reason: str, now: float) -> JobState:
    """Close a session that failed before it could end itself (colabrun's own error, an
    interrupt) and put the job back: ``before``, its status when the session began.

    The one move back to ``pending`` (a new job whose first session never trained). A job
    that was ``running`` or ``completed`` then (its runner died; it was asked for more
    epochs), or whose session recorded a checkpoint, becomes ``stopped``: it resumes like
    any other.
    """
    state = _close_open_session(state, reason=reason, now=now)
    last = state.sessions[-1] if state.sessions else None
    progressed = last is not None and last.end_step != last.start_step
    kept = before in (Status.PENDING, Status.STOPPED, Status.FAILED) and not progressed
    status = before if kept else Status.STOPPED
    return state.model_copy(update={"status": status, "reason": reason, "updated_at": now})


def _close_open_session(state: JobState, *, reason: str, now: float) -> JobState:
    if not state.sessions or state.sessions[-1].ended_at is not None:
        return state
    last = state.sessions[-1].model_copy(
        update={"ended_at": now, "end_step": state.progress.global_step, "end_reason": reason}
    )
    return state.model_copy(update={"sessions": (*state.sessions[:-1], last)})


def record_checkpoint(state: JobState, record: CheckpointRecord, *, now: float) -> JobState:
    """Add a committed checkpoint; progress follows the newest one."""
    records = tuple(r for r in state.checkpoints if r.name != record.name) + (record,)
    records = tuple(sorted(records, key=lambda r: (r.step, r.generation, r.created_at)))
    newest = records[-1]
    progress = state.progress.model_copy(
        update={"epochs_done": newest.epoch, "global_step": newest.step}
    )
    return state.model_copy(update={"checkpoints": records, "progress": progress,
                                    "updated_at": now})


def reconcile_checkpoints(
    state: JobState, *, failed: Iterable[str], found: CheckpointRecord | None, now: float
) -> JobState:
    """After a resume search: drop records that failed verification, add the one
    resumed from if only the listing knew it, and let progress follow what is left."""
    gone = set(failed)
    kept = tuple(r for r in state.checkpoints if r.name not in gone)
    if found is not None and all(r.name != found.name for r in kept):
        kept = tuple(sorted((*kept, found), key=lambda r: (r.step, r.generation, r.created_at)))
    newest = max(kept, key=lambda r: (r.step, r.generation, r.created_at), default=None)
    progress = state.progress.model_copy(update={
        "epochs_done": newest.epoch if newest else 0,
        "global_step": newest.step if newest else 0})
    return state.model_copy(update={"checkpoints": kept, "progress": progress, "updated_at": now})


def forget_checkpoints(state: JobState, names: Iterable[str], *, now: float) -> JobState:
    """Drop records (before their folders are rotated out)."""
    gone = set(names)
    kept = tuple(r for r in state.checkpoints if r.name not in gone)
    return state.model_copy(update={"checkpoints": kept, "updated_at": now})


def set_epochs_total(state: JobState, epochs_total: int, *, now: float) -> JobState:
    """Follow the spec's epoch count (raising it trains longer)."""
    progress = state.progress.model_copy(update={"epochs_total": epochs_total})
    return state.model_copy(update={"progress": progress, "updated_at": now})


def set_fingerprint(
    state: JobState, fingerprint: str, defining: dict[str, Any], *, now: float
) -> JobState:
    """Adopt a changed spec (only on ``--force``)."""
    return state.model_copy(
        update={"spec_fingerprint": fingerprint, "defining": defining, "updated_at": now}
    )


def learn_timing(state: JobState, *, now: float, **observed: float) -> JobState:
    """Blend observed durations (``step_s=``, ``save_s=``, ``load_s=``) into the timings."""
    values = state.timings.model_dump()
    for key, seconds in observed.items():
        old = values[key]
        values[key] = seconds if old is None else (1 - TIMING_SMOOTHING) * old + (
            TIMING_SMOOTHING * seconds
        )
    return state.model_copy(update={"timings": Timings(**values), "updated_at": now})


def note_session(state: JobState, *, device: str, resumed_from: str | None, now: float,
                 start_step: int | None = None) -> JobState:
    """Record, on the open session, the device it trains on, the checkpoint it resumed
    from and that checkpoint's step (known only once the worker found it)."""
    if not state.sessions or state.sessions[-1].ended_at is not None:
        return state
    update: dict[str, object] = {"device": device, "resumed_from": resumed_from}
    if start_step is not None:
        update["start_step"] = start_step
    last = state.sessions[-1].model_copy(update=update)
    return state.model_copy(update={"sessions": (*state.sessions[:-1], last), "updated_at": now})
