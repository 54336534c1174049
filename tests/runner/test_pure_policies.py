"""The pure decisions: which checkpoints to rotate out, what to resume from, when to save."""

from __future__ import annotations

import random

import pytest

from colabrun.jobs.spec import CheckpointPolicy
from colabrun.runner.clock import FakeClock
from colabrun.runner.save.policy import save_due
from colabrun.runner.train.plan import plan_resume
from colabrun.state.checkpoints import checkpoint_name
from colabrun.state.model import CheckpointRecord
from colabrun.state.rotation import plan_rotation


def record(step: int, generation: int = 1, retry: int = 0, *,
           created_at: float | None = None) -> CheckpointRecord:
    return CheckpointRecord(
        name=checkpoint_name(step, generation, retry), step=step, epoch=0, batch=0,
        generation=generation, size_bytes=1, sha256="0" * 64,
        created_at=float(step) if created_at is None else created_at,
    )


# -- rotation ----------------------------------------------------------------------


def test_rotation_keeps_the_last_n_and_deletes_the_rest_oldest_first() -> None:
    records = [record(s) for s in (40, 10, 50, 20, 30)]  # any order in

    doomed = plan_rotation(records, keep_last=2, newest_verified=record(50).name)

    assert doomed == [record(10).name, record(20).name, record(30).name]


@pytest.mark.parametrize("keep_last", [1, 3, 5, 10])
def test_rotation_never_leaves_more_than_asked(keep_last: int) -> None:
    records = [record(s) for s in range(10, 60, 10)]

    doomed = plan_rotation(records, keep_last=keep_last, newest_verified=record(50).name)

    assert len(records) - len(doomed) == min(keep_last, len(records))
    assert record(50).name not in doomed


def test_rotation_never_deletes_the_newest_verified_even_with_keep_last_one() -> None:
    records = [record(s) for s in (10, 20, 30)]

    doomed = plan_rotation(records, keep_last=1, newest_verified=record(30).name)

    assert doomed == [record(10).name, record(20).name]


def test_rotation_keeps_an_older_newest_verified_when_newer_ones_failed() -> None:
    """The newer checkpoints did not verify: the last good one must survive keep_last=1."""
    records = [record(s) for s in (10, 20, 30, 40)]

    doomed = plan_rotation(records, keep_last=1, newest_verified=record(20).name)

    assert record(20).name not in doomed
    assert doomed == [record(10).name, record(30).name]


@pytest.mark.parametrize("keep_last", [0, -3])
def test_rotation_keeps_at_least_one(keep_last: int) -> None:
    records = [record(s) for s in (10, 20)]

    assert plan_rotation(records, keep_last=keep_last, newest_verified=None) == [record(10).name]


def test_rotation_with_few_records_deletes_nothing() -> None:
    assert plan_rotation([], keep_last=3, newest_verified=None) == []
    assert plan_rotation([record(10)], keep_last=3, newest_verified=None) == []
    assert plan_rotation([record(10)], keep_last=1, newest_verified=None) == []


def test_rotation_orders_by_step_then_generation() -> None:
    records = [record(20, 1), record(10, 3), record(20, 2), record(10, 1)]

    doomed = plan_rotation(records, keep_last=1, newest_verified=None)

    assert doomed == [record(10, 1).name, record(10, 3).name, record(20, 1).name]


# -- resume plan -------------------------------------------------------------------


def test_empty_plan_is_a_fresh_start() -> None:
    plan = plan_resume([], [])

    assert plan.candidates == ()
    assert plan.is_fresh_start


def test_only_junk_is_a_fresh_start() -> None:
    plan = plan_resume([], [".tmp-step-000000010-g0001-1a2b3c", "notes", "step-10-g1",
                            "step-000000010-g0001 (1)"])

    assert plan.is_fresh_start


def test_plan_is_the_union_newest_first() -> None:
    recorded = [record(10), record(20)]  # the listing is stale: it lacks 20 ...
    listed = [record(10).name, record(30).name]  # ... and the state never heard of 30

    plan = plan_resume(recorded, listed)

    assert plan.candidates == (record(30).name, record(20).name, record(10).name)
    assert not plan.is_fresh_start


def test_plan_orders_by_step_generation_retry() -> None:
    names = [checkpoint_name(*key) for key in
             [(10, 2, 0), (20, 1, 0), (10, 2, 1), (10, 1, 5), (20, 1, 2), (9, 9, 9)]]
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)

    plan = plan_resume([], shuffled + [".tmp-x", "junk"])

    assert plan.candidates == tuple(checkpoint_name(*key) for key in
                                    [(20, 1, 2), (20, 1, 0), (10, 2, 1), (10, 2, 0), (10, 1, 5),
                                     (9, 9, 9)])


def test_plan_orders_steps_numerically_beyond_nine_digits() -> None:
    names = [checkpoint_name(999_999_999, 1), checkpoint_name(1_000_000_000, 1)]

    assert plan_resume([], names).candidates == (names[1], names[0])


def test_plan_has_no_duplicates() -> None:
    plan = plan_resume([record(10), record(10)], [record(10).name, record(10).name])

    assert plan.candidates == (record(10).name,)


# -- when to save ------------------------------------------------------------------


def policy(**fields: object) -> CheckpointPolicy:
    return CheckpointPolicy.model_validate(
        {"every_steps": None, "every_s": None, "at_epoch_end": False, "max_overhead": None,
         **fields})


def test_nothing_configured_never_saves() -> None:
    assert save_due(policy(), steps_since_save=10**6, seconds_since_save=1e9,
                    at_epoch_end=True) is None


def test_every_steps_fires_at_the_count() -> None:
    p = policy(every_steps=10)

    assert save_due(p, steps_since_save=9, seconds_since_save=0.0, at_epoch_end=False) is None
    assert save_due(p, steps_since_save=10, seconds_since_save=0.0,
                    at_epoch_end=False) == "every_steps"
    assert save_due(p, steps_since_save=11, seconds_since_save=0.0,
                    at_epoch_end=False) == "every_steps"


def test_every_s_follows_the_seconds_argument() -> None:
    p = policy(every_s=300.0)
    clock = FakeClock()
    last_save = clock.monotonic()
    due = []
    for _ in range(10):
        clock.advance(60.0)
        due.append(save_due(p, steps_since_save=1, seconds_since_save=clock.monotonic() - last_save,
                            at_epoch_end=False))

    assert due == [None] * 4 + ["every_s"] * 6  # from 300 s on


def test_every_s_needs_a_new_step() -> None:
    clock = FakeClock()
    clock.advance(12 * 3600)

    assert save_due(policy(every_s=300.0), steps_since_save=0,
                    seconds_since_save=clock.monotonic(), at_epoch_end=False) is None


def test_no_save_with_zero_new_steps_whatever_the_triggers() -> None:
    p = policy(every_steps=1, every_s=1.0, at_epoch_end=True)

    for steps in (0, -1):
        assert save_due(p, steps_since_save=steps, seconds_since_save=1e6,
                        at_epoch_end=False) is None


def test_epoch_end_saves_even_without_new_steps() -> None:
    p = policy(at_epoch_end=True)

    assert save_due(p, steps_since_save=0, seconds_since_save=0.0,
                    at_epoch_end=True) == "epoch_end"
    assert save_due(p, steps_since_save=3, seconds_since_save=0.0,
                    at_epoch_end=True) == "epoch_end"
    assert save_due(p, steps_since_save=3, seconds_since_save=0.0, at_epoch_end=False) is None


def test_epoch_end_without_the_trigger_falls_through_to_the_others() -> None:
    p = policy(at_epoch_end=False, every_steps=5, every_s=60.0)

    assert save_due(p, steps_since_save=0, seconds_since_save=1e6, at_epoch_end=True) is None
    assert save_due(p, steps_since_save=2, seconds_since_save=1.0, at_epoch_end=True) is None
    assert save_due(p, steps_since_save=5, seconds_since_save=1.0,
                    at_epoch_end=True) == "every_steps"
    assert save_due(p, steps_since_save=2, seconds_since_save=60.0,
                    at_epoch_end=True) == "every_s"


def test_reason_precedence_epoch_end_then_steps_then_seconds() -> None:
    p = policy(at_epoch_end=True, every_steps=5, every_s=60.0)

    assert save_due(p, steps_since_save=5, seconds_since_save=60.0,
                    at_epoch_end=True) == "epoch_end"
    assert save_due(p, steps_since_save=5, seconds_since_save=60.0,
                    at_epoch_end=False) == "every_steps"


def test_default_policy_saves_every_few_minutes() -> None:
    p = CheckpointPolicy()
    clock = FakeClock()
    clock.advance(p.every_s or 0.0)

    assert save_due(p, steps_since_save=1, seconds_since_save=clock.monotonic(),
                    at_epoch_end=False) == "every_s"
