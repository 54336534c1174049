"""Waiting on another runtime's lease, with a fake clock: a dead runtime's job is taken
over once its lease expires, a live owner is refused within one heartbeat."""

from __future__ import annotations

import io

import pytest

from colabrun.runner.clock import FakeClock
from colabrun.runner.display.console import Console
from colabrun.runner.watch.takeover import wait_for_lease
from colabrun.state.lease import LeaseHeld, Owner, take
from colabrun.state.model import JobState
from colabrun.state.transitions import new_job

ME = Owner("runtime-new", "vm-new", 100)
OLD = Owner("runtime-old", "vm-old", 200)
LEASE_S = 45.0


def _held(clock: FakeClock, *, age_s: float) -> JobState:
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=clock.time())
    return take(state, OLD, now=clock.time() - age_s, duration_s=LEASE_S)


def _beat(state: JobState, at: float) -> JobState:
    assert state.lease is not None
    return state.model_copy(update={"lease": state.lease.model_copy(update={"heartbeat_at": at})})


def test_a_dead_runtimes_lease_is_free_once_it_expires() -> None:
    clock = FakeClock()
    state = _held(clock, age_s=5.0)
    reads: list[float] = []

    def read() -> JobState:
        reads.append(clock.time())
        return state  # nobody writes: its runtime is gone

    out = io.StringIO()
    started = clock.time()
    wait_for_lease(state, read, ME, clock=clock, console=Console(out=out),
                   is_alive=lambda pid: True)
    waited = clock.time() - started
    assert LEASE_S - 5.0 <= waited <= LEASE_S - 5.0 + 1.0, waited
    assert "waiting up to 40 s to see whether that runtime is still alive" in out.getvalue()
    assert len(reads) <= 42  # one read a second, not a busy loop


def test_a_live_owner_is_refused_at_its_next_heartbeat() -> None:
    clock = FakeClock()
    state = _held(clock, age_s=2.0)
    beat_at = clock.time() + LEASE_S / 4 - 2.0  # the owner's next heartbeat

    def read() -> JobState:
        return _beat(state, clock.time()) if clock.time() >= beat_at else state

    started = clock.time()
    with pytest.raises(LeaseHeld, match=r"vm-old .*takeover=True \(--takeover"):
        wait_for_lease(state, read, ME, clock=clock, console=Console(out=io.StringIO()),
                       is_alive=lambda pid: True)
    assert clock.time() - started <= LEASE_S / 4


def test_a_live_process_of_this_runtime_is_refused_without_waiting() -> None:
    clock = FakeClock()
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=clock.time())
    state = take(state, Owner(ME.runtime_id, ME.host, 300), now=clock.time(), duration_s=LEASE_S)
    with pytest.raises(LeaseHeld):
        wait_for_lease(state, lambda: state, ME, clock=clock,
                       console=Console(out=io.StringIO()), is_alive=lambda pid: True)
    assert clock.time() == FakeClock().time()


@pytest.mark.parametrize("lease_state", ["free", "expired", "dead here"])
def test_nothing_to_wait_for(lease_state: str) -> None:
    clock = FakeClock()
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=clock.time())
    if lease_state == "expired":
        state = _held(clock, age_s=LEASE_S + 1)
    elif lease_state == "dead here":
        state = take(state, Owner(ME.runtime_id, ME.host, 300), now=clock.time(),
                     duration_s=LEASE_S)
    wait_for_lease(state, lambda: state, ME, clock=clock, console=Console(out=io.StringIO()),
                   is_alive=lambda pid: False)
    assert clock.time() == FakeClock().time()


def test_a_lease_released_meanwhile_is_free() -> None:
    clock = FakeClock()
    state = _held(clock, age_s=1.0)
    released = state.model_copy(update={"lease": None})
    wait_for_lease(state, lambda: released, ME, clock=clock,
                   console=Console(out=io.StringIO()), is_alive=lambda pid: True)
    assert clock.time() - FakeClock().time() <= 1.0


def test_a_heartbeat_from_the_future_that_never_moves_is_dead_after_one_lease() -> None:
    """The old runtime's clock ran ahead: its last heartbeat reads as 'in 10 minutes'. Watched
    for a whole lease without a new one, it is given up as dead."""
    clock = FakeClock()
    state = _held(clock, age_s=-600.0)
    started = clock.monotonic()
    dead = wait_for_lease(state, lambda: state, ME, clock=clock,
                          console=Console(out=io.StringIO()), is_alive=lambda pid: True)
    assert dead == state.lease
    assert LEASE_S <= clock.monotonic() - started <= LEASE_S + 1.0
