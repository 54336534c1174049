"""Opening a job for a session: its state read and checked against the spec before
anything is written, then its lease taken and its session begun, in one write of
``state.json`` (on Drive each write is a round trip: docs/concepts.md#the-lease)."""

from __future__ import annotations

from typing import Any

from colabrun.jobs.errors import ColabrunError, SpecMismatch
from colabrun.jobs.spec import JobSpec, changed_defining_fields
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.platform import pid_alive
from colabrun.runner.preflight import MIN_FREE_BYTES, check_folders
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import (
    Fence,
    LeaseHeld,
    Owner,
    Verdict,
    fence_of,
    held_message,
    judge,
    take,
)
from colabrun.state.model import JobState, Lease
from colabrun.state.transitions import begin_session, new_job, set_epochs_total, set_fingerprint


def open_state(
    job: JobDir, spec: JobSpec, *, force: bool, clock: Clock, console: Console
) -> tuple[JobState, bool]:
    """The job's state, checked against the spec, and whether it is on disk yet.

    Nothing is written before the spec and the folders are checked. A job's first state
    is built here but written only with its first lease, in one transaction
    (:func:`take_and_begin`): on Drive each write is a round trip.
    """
    check_folders(spec, job.root, job.storage)  # first: a root under a file fails its reads
    state = job.statefile.read()
    on_disk = state is not None
    if state is None:
        state = _initial_state(job, spec, clock=clock, console=console)
    differing = changed_defining_fields(state.defining, spec)
    if differing and not force:
        details = "; ".join(f"{f}: {state.defining.get(f)!r} -> {spec.defining_fields()[f]!r}"
                            for f in differing)
        raise SpecMismatch(
            f"job {spec.name!r} under {job.root} was created with other {', '.join(differing)} "
            f"({details}); use a new job name, or pass --force (force=True) to continue "
            "its checkpoints with the new values"
        )
    latest = state.latest_checkpoint
    if latest is not None and latest.size_bytes > MIN_FREE_BYTES:  # room for one more that big
        check_folders(spec, job.root, job.storage, checkpoint_bytes=latest.size_bytes)
    job.storage.makedirs(job.path)  # the first write of this run
    console.attach_log(job.path)
    return state, on_disk


def _initial_state(job: JobDir, spec: JobSpec, *, clock: Clock, console: Console) -> JobState:
    """A new job's state, or one rebuilt from the committed checkpoints of a job whose
    ``state.json`` never reached the storage."""
    if not job.store.list_names():
        return new_job(name=spec.name, fingerprint=spec.fingerprint(),
                       defining=spec.defining_fields(), epochs_total=spec.epochs,
                       now=clock.time())
    # The job's own spec.json says what its checkpoints were trained with; the
    # spec of this run is checked against it afterwards, like any other run's.
    try:
        kept = job.read_spec()
    except ColabrunError:
        kept = spec
    state, problems = job.rebuild_state(kept, now=clock.time())
    console.warn(f"{job.statefile.path} was missing (a write that never reached the "
                 f"storage?); rebuilt it from {len(state.checkpoints)} committed checkpoints")
    for problem in problems:
        console.warn(f"skipped {problem}")
    return state


def take_and_begin(job: JobDir, spec: JobSpec, me: Owner, initial: JobState | None, *,
                    takeover: bool, dead: Lease | None, clock: Clock, console: Console,
                    deadline_at: float | None, taken: list[Fence]) -> JobState:
    """One write of ``state.json``: take the lease (or raise :class:`LeaseHeld`), adopt
    the spec, open the session; a new job's state is created by the same write.

    ``taken`` receives the new lease's fence before the write: a write that fails after
    its rename still left the lease there, to be given back."""
    seen: list[tuple[Verdict, JobState]] = []

    def change(s: JobState) -> JobState:
        now = clock.time()
        verdict = judge(s.lease, me, now=now, is_alive=pid_alive)
        if verdict is Verdict.HELD and dead is not None and s.lease == dead:
            verdict = Verdict.EXPIRED  # watched for its whole duration: no heartbeat came
        if verdict is Verdict.HELD and not takeover:
            assert s.lease is not None
            raise LeaseHeld(held_message(s, s.lease, now=now))
        seen.append((verdict, s))
        s = take(s, me, now=now, duration_s=spec.lease_s)
        taken[:] = [fence_of(s)]
        if s.defining != spec.defining_fields():
            s = set_fingerprint(s, spec.fingerprint(), spec.defining_fields(), now=now)
        return begin_session(set_epochs_total(s, spec.epochs, now=now),
                             runtime_id=me.runtime_id, host=me.host, pid=me.pid, device="?",
                             resumed_from=None, now=now, deadline_at=deadline_at)

    if initial is not None:  # spec.json first: a state on disk always has its spec
        job.write_spec(spec)
    state = job.statefile.update(change, initial=initial)
    verdict, before = seen[-1]
    old = before.lease
    if old is not None and verdict is not Verdict.MINE:
        console.warn(f"took job {spec.name!r} over from pid {old.pid} on {old.host} "
                     f"(runtime {old.owner}): {verdict.value.replace('_', ' ')}")
    _say_how_the_spec_changed(spec, before.defining, console)
    if initial is None:
        job.write_spec(spec)
    return state


def _say_how_the_spec_changed(spec: JobSpec, defining: dict[str, Any],
                              console: Console) -> None:
    if changed_defining_fields(defining, spec):  # only reached with --force
        console.warn(f"--force: continuing job {spec.name!r} with the changed spec")
    elif defining.get("entrypoint") != spec.entrypoint_ref:
        console.info(f"job {spec.name!r} was created with entrypoint "
                     f"{defining.get('entrypoint')!r}, now named {spec.entrypoint_ref!r}; "
                     "continuing (docs/troubleshooting.md, \"Renamed entrypoints\")")


def clear_leftovers(job: JobDir) -> None:
    """What a dead session left half-written: never read, deleted now that the job is ours."""
    job.store.discard_uncommitted()
    job.local.discard_uncommitted()
    job.statefile.discard_stale_temporaries()
