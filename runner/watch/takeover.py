"""Waiting on another runtime's lease: is its owner alive, or did its runtime die?

A fresh runtime that re-runs the cell right after the old one died finds the old lease
still live-looking. Rather than refuse (and make the user come back in minutes), it
watches the lease until it expires: a heartbeat that moves meanwhile means a live owner,
refused in one line; none means the runtime is gone, and the job is taken over. The
owner's heartbeat comes every quarter of ``lease_s``, so a live owner is known within a
quarter of the threshold, a dead one after at most the threshold
(docs/colab.md#a-new-runtime-and-the-lease). The decisions are those of
:func:`~colabrun.state.lease.watch`.
"""

from __future__ import annotations

from collections.abc import Callable

from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.state.lease import (
    LeaseHeld,
    Owner,
    Verdict,
    Watch,
    held_message,
    judge,
    wait_s,
    watch,
)
from colabrun.state.model import JobState, Lease

#: how often the state file is read while waiting (seconds; a quarter of the heartbeat's
#: period at most)
POLL_S = 1.0


def wait_for_lease(state: JobState, read: Callable[[], JobState | None], me: Owner, *,
                   clock: Clock, console: Console, is_alive: Callable[[int], bool],
                   poll_s: float = POLL_S) -> Lease | None:
    """Return once the job's lease may be taken; raise while another runtime lives.

    A lease watched for its whole duration without a new heartbeat is dead, even if its
    heartbeat reads as younger (a clock that runs ahead on the old runtime).

    Args:
        state: the job's state as just read.
        read: reads the job's state file again (``None``: it is gone).
        me: the runner that wants the job.
        clock: the injected clock (its sleep paces the reads).
        console: where the wait is announced.
        is_alive: whether a pid of this runtime still runs.
        poll_s: how often to read.

    Returns:
        The lease watched until it proved dead (to be taken over as such), or ``None``.

    Raises:
        LeaseHeld: the owner is alive (its heartbeat moved, or it lives on this runtime).
    """
    if state.lease is None:
        return None
    first = state.lease
    now = clock.time()
    if judge(first, me, now=now, is_alive=is_alive) is not Verdict.HELD:
        return None
    if first.owner == me.runtime_id:  # a live process of this very runtime: no doubt
        raise LeaseHeld(held_message(state, first, now=now))
    console.info(f"job {state.name!r} is held by {first.host} (runtime {first.owner}), last "
                 f"heartbeat {now - first.heartbeat_at:.0f} s ago: waiting up to "
                 f"{wait_s(first, now=now):.0f} s to see whether that runtime is still alive")
    given_up_at = clock.monotonic() + first.duration_s  # four heartbeats missed, at least
    while True:
        left = min(wait_s(first, now=clock.time()), given_up_at - clock.monotonic())
        clock.sleep(min(poll_s, max(0.05, left)))
        current = read()
        now = clock.time()
        news = watch(first, current.lease if current else None, me, now=now,
                     is_alive=is_alive)
        if news is Watch.FREE:
            return None
        if news is Watch.WAIT and clock.monotonic() >= given_up_at:
            return first
        if news is Watch.LIVE:
            assert current is not None and current.lease is not None
            raise LeaseHeld(held_message(current, current.lease, now=now))
