"""Who may write a job: the lease in ``state.json``, decided by pure functions.

File locks do not reach across runtimes on Drive (docs/concepts.md#the-lease), so the
owner writes its identity and a heartbeat time into the state file. Another
runner may take over when the owner is provably dead (same runtime, its pid
gone) or its heartbeat is older than the lease's duration (a runtime that
vanished, F1/F4). A runner of another runtime that finds the lease live watches
it for that long (:func:`watch`): a heartbeat that moves means a live owner, one
that does not means a dead runtime (docs/colab.md#a-new-runtime-and-the-lease).
Each takeover bumps the generation; a writer that finds a newer generation than
its own stops writing, and whatever it wrote after the takeover is never read
(fencing: :func:`fenced_at`).
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


class Watch(str, Enum):
    """What watching another runtime's live-looking lease has shown so far."""

    WAIT = "wait"  # no news yet: its heartbeat may still come
    FREE = "free"  # released, expired, or its owner is dead: try to take it
    LIVE = "live"  # its heartbeat moved, or someone else took it: refuse


def watch(first: Lease, current: Lease | None, me: Owner, *, now: float,
          is_alive: Callable[[int], bool]) -> Watch:
    """The news of a lease first seen as ``first`` and now read as ``current``.

    Args:
        first: the lease as first seen (judged :attr:`Verdict.HELD`).
        current: the lease as read now.
        me: the runner waiting.
        now: wall time (Unix seconds).
        is_alive: whether a pid of *this* runtime still runs.
    """
    verdict = judge(current, me, now=now, is_alive=is_alive)
    if verdict is not Verdict.HELD:
        return Watch.FREE
    assert current is not None
    if current.token != first.token or current.heartbeat_at > first.heartbeat_at:
        return Watch.LIVE
    return Watch.WAIT


def wait_s(lease: Lease, *, now: float) -> float:
    """How long until ``lease`` expires without a new heartbeat (0 when it has)."""
    return max(0.0, lease.duration_s - (now - lease.heartbeat_at))


def held_message(state: JobState, lease: Lease, *, now: float) -> str:
    """Who holds the job, since when, and what to do, in one line."""
    since = dt.datetime.fromtimestamp(lease.acquired_at).strftime("%Y-%m-%d %H:%M:%S")
    return (f"job {state.name!r} is being run by pid {lease.pid} on {lease.host} (runtime "
            f"{lease.owner}) since {since}, last heartbeat {now - lease.heartbeat_at:.0f} s ago; "
            "let it finish, or stop it there (`colabrun stop`); if that runtime is gone, run "
            f"again in {wait_s(lease, now=now):.0f} s, or now with takeover=True "
            "(--takeover on the command line)")


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


def fenced_at(state: JobState, generation: int) -> float | None:
    """When ``generation`` lost the job: the start of the first session of a newer one.

    A checkpoint that generation created at or after this time was written by a runner
    that had lost its lease (frozen, then woken) and is never loaded; ``None`` while no
    newer generation has a session.
    """
    return min((s.started_at for s in state.sessions if s.generation > generation),
               default=None)


def written_after_fencing(state: JobState, generation: int, created_at: float) -> bool:
    """Whether a checkpoint of ``generation`` created at ``created_at`` came after its
    runner lost the job (see :func:`fenced_at`)."""
    fenced = fenced_at(state, generation)
    return fenced is not None and created_at >= fenced


def release(state: JobState, fence: Fence, *, now: float) -> JobState:
    """Drop the lease if it is still ours."""
    if not holds(state, fence):
        return state
    return state.model_copy(update={"lease": None, "updated_at": now})
