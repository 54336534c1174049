"""Pure transitions of the state model: no disk, no clock."""

from __future__ import annotations

import itertools

import pytest

from colabrun.jobs.errors import ColabrunError
from colabrun.state.lease import Owner, take
from colabrun.state.model import CheckpointRecord, JobState, Status
from colabrun.state.transitions import (
    LEGAL_MOVES,
    TIMING_SMOOTHING,
    IllegalTransition,
    abandon_session,
    begin_session,
    end_session,
    forget_checkpoints,
    learn_timing,
    move,
    new_job,
    record_checkpoint,
    set_epochs_total,
    set_fingerprint,
)

P, R, S, C, F = Status.PENDING, Status.RUNNING, Status.STOPPED, Status.COMPLETED, Status.FAILED

#: written out independently of LEGAL_MOVES, so a change to the table fails here
EXPECTED_LEGAL = {(P, R), (P, F), (R, R), (R, S), (R, C), (R, F), (S, R), (F, R), (C, R)}


def fresh(now: float = 100.0) -> JobState:
    return new_job(name="digits", fingerprint="abc", defining={"seed": 7}, epochs_total=3,
                   now=now)


def begun(state: JobState, now: float, runtime_id: str = "rt") -> JobState:
    """Take the lease (bumping the generation), then open a session, as the runner does."""
    leased = take(state, Owner(runtime_id, "vm", 1), now=now, duration_s=600.0)
    return begin_session(leased, runtime_id=runtime_id, host="vm", pid=1, device="cpu",
                         resumed_from=None, now=now)


def record(step: int, generation: int = 1, *, epoch: int = 0, created_at: float = 0.0,
           name: str | None = None) -> CheckpointRecord:
    return CheckpointRecord(
        name=name or f"step-{step:09d}-g{generation:04d}", step=step, epoch=epoch, batch=0,
        generation=generation, size_bytes=10, sha256="0" * 64, created_at=created_at or step,
    )


def test_new_job_is_pending_at_generation_zero() -> None:
    state = fresh()

    assert state.status is P
    assert state.generation == 0
    assert state.sessions == () and state.checkpoints == ()
    assert (state.progress.epochs_total, state.progress.epochs_done,
            state.progress.global_step) == (3, 0, 0)
    assert state.latest_checkpoint is None


def test_every_status_has_moves() -> None:
    assert set(LEGAL_MOVES) == set(Status)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(Status, Status)),
                         ids=lambda s: s.value)
def test_move_between_every_pair(source: Status, target: Status) -> None:
    state = fresh().model_copy(update={"status": source, "reason": "old"})

    if (source, target) in EXPECTED_LEGAL:
        moved = move(state, target, now=200.0, reason="why")
        assert moved.status is target
        assert moved.reason == "why"
        assert moved.updated_at == 200.0
    else:
        with pytest.raises(IllegalTransition) as info:
            move(state, target, now=200.0)
        assert source.value in str(info.value) and target.value in str(info.value)
        assert isinstance(info.value, ColabrunError)
        assert isinstance(info.value, RuntimeError)
    assert state.status is source  # the input is untouched


def test_begin_session_opens_a_session_under_the_leased_generation() -> None:
    leased = take(fresh(), Owner("rt-1", "vm", 9), now=150.0, duration_s=600.0)
    state = begin_session(leased, runtime_id="rt-1", host="vm", pid=9, device="cuda",
                          resumed_from="step-000000010-g0001", now=150.0)

    assert state.status is R
    assert state.generation == 1
    assert state.reason is None
    (session,) = state.sessions
    assert (session.index, session.runtime_id, session.device, session.generation) == (
        0, "rt-1", "cuda", 1)
    assert session.started_at == 150.0
    assert session.start_step == 0
    assert session.resumed_from == "step-000000010-g0001"
    assert session.ended_at is None and session.end_reason is None


def test_begin_session_closes_a_session_left_open_as_lost() -> None:
    first = begun(fresh(), 150.0, "rt-1")
    first = record_checkpoint(first, record(40, 1), now=160.0)

    second = begun(first, 500.0, "rt-2")

    assert second.generation == 2
    old, new = second.sessions
    assert old.ended_at == 500.0
    assert old.end_step == 40
    assert old.end_reason is not None and "lost" in old.end_reason
    assert (new.index, new.runtime_id, new.generation, new.start_step) == (1, "rt-2", 2, 40)
    assert new.ended_at is None


def test_begin_session_after_a_clean_end_keeps_that_end() -> None:
    stopped = end_session(begun(fresh(), 150.0), S, reason="deadline", now=300.0)

    resumed = begun(stopped, 400.0)

    assert resumed.sessions[0].end_reason == "deadline"
    assert resumed.sessions[0].ended_at == 300.0
    assert resumed.status is R
    assert resumed.reason is None  # the stop reason does not outlive the stop


@pytest.mark.parametrize("status", [C, F, S])
def test_any_ended_job_can_begin_again(status: Status) -> None:
    ended = end_session(begun(fresh(), 150.0), status, reason="r", now=200.0)

    assert begun(ended, 300.0).generation == 2


def test_end_session_completed_clears_reason() -> None:
    running = begun(fresh(), 150.0).model_copy(update={"reason": "stale"})

    done = end_session(running, C, reason="all epochs trained", now=900.0)

    assert done.status is C
    assert done.reason is None
    assert done.sessions[-1].end_reason == "all epochs trained"
    assert done.sessions[-1].ended_at == 900.0
    assert done.is_done_for(3) and not done.is_done_for(4)


@pytest.mark.parametrize("status", [S, F])
def test_end_session_stopped_or_failed_keeps_reason(status: Status) -> None:
    ended = end_session(begun(fresh(), 150.0), status, reason="out of time", now=900.0)

    assert ended.status is status
    assert ended.reason == "out of time"
    assert ended.sessions[-1].end_reason == "out of time"


def test_end_session_of_pending_job_cannot_complete() -> None:
    with pytest.raises(IllegalTransition):
        end_session(fresh(), C, reason="never ran", now=1.0)


@pytest.mark.parametrize("before", [P, S, F])
def test_abandon_session_puts_a_job_back_as_it_was(before: Status) -> None:
    state = begun(fresh(), now=150.0).model_copy(update={"status": R})
    undone = abandon_session(state, before=before, reason="did not run: OSError: x", now=160.0)
    assert undone.status is before  # pending included: the one move back to it
    assert undone.reason == "did not run: OSError: x"
    (session,) = undone.sessions
    assert (session.ended_at, session.end_reason) == (160.0, "did not run: OSError: x")


@pytest.mark.parametrize("before", [R, C])
def test_abandon_session_of_a_job_running_or_completed_before_leaves_it_stopped(
        before: Status) -> None:
    # running: its runner died; completed: asked for more epochs, it must not look done
    undone = abandon_session(begun(fresh(), now=150.0), before=before, reason="r", now=160.0)
    assert undone.status is S


def test_abandon_session_after_a_checkpoint_leaves_the_job_stopped() -> None:
    state = record_checkpoint(begun(fresh(), now=150.0), record(10), now=155.0)
    undone = abandon_session(state, before=P, reason="r", now=160.0)
    assert undone.status is S and undone.progress.global_step == 10


def test_record_checkpoint_keeps_records_sorted_and_progress_follows_the_newest() -> None:
    state = begun(fresh(), 1.0)
    for rec in (record(20, 1, epoch=1), record(10, 1), record(30, 1, epoch=2), record(5, 1)):
        state = record_checkpoint(state, rec, now=rec.step)

    assert [r.step for r in state.checkpoints] == [5, 10, 20, 30]
    assert (state.progress.global_step, state.progress.epochs_done) == (30, 2)
    assert state.latest_checkpoint is not None and state.latest_checkpoint.step == 30
    assert state.updated_at == 5  # the last call's now


def test_record_checkpoint_orders_by_generation_within_a_step() -> None:
    state = begun(fresh(), 1.0)
    state = record_checkpoint(state, record(10, 3), now=2.0)
    state = record_checkpoint(state, record(10, 2), now=3.0)

    assert [r.generation for r in state.checkpoints] == [2, 3]
    assert state.latest_checkpoint is not None and state.latest_checkpoint.generation == 3


def test_record_checkpoint_replaces_a_record_of_the_same_name() -> None:
    state = begun(fresh(), 1.0)
    state = record_checkpoint(state, record(10, 1), now=2.0)
    state = record_checkpoint(state, record(10, 1, epoch=1), now=3.0)

    assert len(state.checkpoints) == 1
    assert state.checkpoints[0].epoch == 1


def test_forget_checkpoints_drops_only_the_named() -> None:
    state = begun(fresh(), 1.0)
    for step in (10, 20, 30):
        state = record_checkpoint(state, record(step), now=float(step))

    state = forget_checkpoints(state, [record(10).name, "not-there"], now=40.0)

    assert [r.step for r in state.checkpoints] == [20, 30]
    assert state.progress.global_step == 30


def test_learn_timing_first_observation_then_moving_average() -> None:
    state = fresh()

    state = learn_timing(state, now=1.0, step_s=2.0)
    assert state.timings.step_s == 2.0
    assert state.timings.save_s is None and state.timings.load_s is None

    state = learn_timing(state, now=2.0, step_s=4.0, save_s=10.0)
    assert state.timings.step_s == pytest.approx(0.7 * 2.0 + 0.3 * 4.0)  # 2.6
    assert state.timings.save_s == 10.0

    state = learn_timing(state, now=3.0, step_s=4.0)
    expected = (1 - TIMING_SMOOTHING) * 2.6 + TIMING_SMOOTHING * 4.0
    assert state.timings.step_s == pytest.approx(expected)
    assert state.timings.save_s == 10.0
    assert state.updated_at == 3.0


def test_learn_timing_converges_to_a_steady_value() -> None:
    state = learn_timing(fresh(), now=0.0, load_s=100.0)
    for i in range(60):
        state = learn_timing(state, now=float(i), load_s=1.0)

    assert state.timings.load_s == pytest.approx(1.0, abs=1e-6)


def test_set_epochs_total_and_fingerprint() -> None:
    state = set_epochs_total(fresh(), 10, now=5.0)
    state = set_fingerprint(state, "new", {"seed": 8}, now=6.0)

    assert state.progress.epochs_total == 10
    assert (state.spec_fingerprint, state.defining, state.updated_at) == ("new", {"seed": 8}, 6.0)


def test_transitions_do_not_change_their_input() -> None:
    before = begun(fresh(), 1.0)
    snapshot = before.model_dump()

    record_checkpoint(before, record(10), now=2.0)
    learn_timing(before, now=3.0, step_s=1.0)
    end_session(before, C, reason="done", now=4.0)
    begun(before, 5.0)

    assert before.model_dump() == snapshot
