"""Who may write a job: the lease in ``state.json``, decided by pure functions.

File locks do not reach across runtimes on Drive (docs/concepts.md#the-lease), so the
owner writes its identity and a heartbeat time into the state file. Another
runner may take over when the owner is provably dead (same runtime, its pid
gone) or its heartbeat is older than the lease's duration (a runtime that
vanished, F1/F4). Each takeover bumps the generation; a writer that finds a
newer generation than its own stops writing (fencing).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from colabrun.jobs.errors import ColabrunError
from colabrun.state.model import JobState, Lease


class LeaseHeld(ColabrunError, RuntimeError):
    """Another live runner owns the job."""

    exit_code = 4


class LeaseLost(ColabrunError, RuntimeError):
    """Another runner took the job over; this one must stop writing."""

    exit_code = 4


class Verdict(str, Enum):
    """What a would-be owner may do with the current lease."""

    FREE = "free"              # no lease: take it
    MINE = "mine"              # this very process holds it
    OWNER_DEAD = "owner_dead"  # same runtime, its process is gone: take over now
    EXPIRED = "expired"        # no heartbeat for the lease's duration: take over
    HELD = "held"              # a live owner: refuse


@dataclass(frozen=True)
class Fence:
    """What a writer proves it still owns the job with: the generation of its
    lease and the lease's unique token."""

    generation: int
    token: str


def fence_of(state: JobState) -> Fence:
    """The fence of the lease ``state`` holds."""
    assert state.lease is not None, "no lease taken"
    return Fence(state.lease.generation, state.lease.token)


def holds(state: JobState, fence: Fence) -> bool:
    """Whether ``state``'s lease is still the one ``fence`` was taken with."""
    lease = state.lease
    return (lease is not None and state.generation == fence.generation
            and lease.generation == fence.generation and lease.token == fence.token)


@dataclass(frozen=True)
class Owner:
    """A runner's identity: the runtime (VM boot), host and process."""

    runtime_id: str
    host: str
    pid: int


def judge(lease: Lease | None, me: Owner, *, now: float,
          is_alive: Callable[[int], bool]) -> Verdict:
    """The verdict on ``lease`` for ``me`` at ``now``.

    Args:
        lease: the current lease, if any.
        me: the runner asking.
        now: wall time (Unix seconds).
        is_alive: whether a pid of *this* runtime still runs.
    """
    if lease is None:
        return Verdict.FREE
    if lease.owner == me.runtime_id and lease.pid == me.pid:
        return Verdict.MINE
    if lease.owner == me.runtime_id and not is_alive(lease.pid):
        return Verdict.OWNER_DEAD
    if now - lease.heartbeat_at > lease.duration_s:
        return Verdict.EXPIRED
    return Verdict.HELD


def held_message(state: JobState, lease: Lease, *, now: float) -> str:
    """Who holds the job, since when, and what to do."""
    since = dt.datetime.fromtimestamp(lease.acquired_at).strftime("%Y-%m-%d %H:%M:%S")
    expires = max(0.0, lease.duration_s - (now - lease.heartbeat_at))
    return (f"job {state.name!r} is being run by pid {lease.pid} on {lease.host} (runtime "
            f"{lease.owner}) since {since}, last heartbeat {now - lease.heartbeat_at:.0f} s ago; "
            f"wait for it to finish, or if that runtime is gone, run again in {expires:.0f} s "
            "when its lease expires (or now with --takeover)")


def take(state: JobState, me: Owner, *, now: float, duration_s: float) -> JobState:
    """``state`` with a new lease for ``me`` and the generation bumped."""
    generation = state.generation + 1
    lease = Lease(owner=me.runtime_id, host=me.host, pid=me.pid, generation=generation,
                  acquired_at=now, heartbeat_at=now, duration_s=duration_s,
                  token=uuid.uuid4().hex)
    return state.model_copy(update={"lease": lease, "generation": generation, "updated_at": now})


def check_fence(state: JobState, fence: Fence) -> None:
    """Raise :class:`LeaseLost` when the job's lease is no longer the one of ``fence``."""
    if not holds(state, fence):
        generation = fence.generation
        owner = state.lease
        who = f"pid {owner.pid} on {owner.host}" if owner else "nobody (released)"
        raise LeaseLost(
            f"job {state.name!r} was taken over (generation {state.generation}, held by {who}) "
            f"while this runner (generation {generation}) was writing; this runner stops "
            "writing. If that was not intended, check for two runtimes on one job"
        )


def heartbeat(state: JobState, fence: Fence, *, now: float) -> JobState:
    """Refresh the lease's heartbeat, after checking the fence."""
    check_fence(state, fence)
    assert state.lease is not None
    return state.model_copy(update={"lease": state.lease.model_copy(
        update={"heartbeat_at": now}), "updated_at": now})


def release(state: JobState, fence: Fence, *, now: float) -> JobState:
    """Drop the lease if it is still ours."""
    if not holds(state, fence):
        return state
    return state.model_copy(update={"lease": None, "updated_at": now})
