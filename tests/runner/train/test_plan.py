"""Tier 1: the resume plan over the root's and the local checkpoint names.

The root-only plan (records and listing) is tested in tests/runner/test_pure_policies.py.
"""

from __future__ import annotations

from colabrun.runner.train.plan import Attempt, plan_resume
from colabrun.state.checkpoints import checkpoint_name
from colabrun.state.model import CheckpointRecord


def record(step: int, generation: int = 1) -> CheckpointRecord:
    return CheckpointRecord(name=checkpoint_name(step, generation), step=step, epoch=0,
                            batch=0, generation=generation, size_bytes=1, sha256="0" * 64,
                            created_at=float(step))


def root(step: int, generation: int = 1, retry: int = 0) -> Attempt:
    return Attempt(checkpoint_name(step, generation, retry), "root")


def local(step: int, generation: int = 1, retry: int = 0) -> Attempt:
    return Attempt(checkpoint_name(step, generation, retry), "local")


def test_only_local_checkpoints_are_no_fresh_start() -> None:
    plan = plan_resume([], [], [checkpoint_name(5, 1)])
    assert plan.candidates == () and plan.attempts == (local(5),)
    assert not plan.is_fresh_start
    assert plan_resume([], [], []).is_fresh_start


def test_a_local_checkpoint_newer_than_the_root_comes_first() -> None:
    """Committed locally, never uploaded (the runtime died before the upload)."""
    plan = plan_resume([record(10)], [checkpoint_name(10, 1)], [checkpoint_name(20, 1)])
    assert plan.attempts == (local(20), root(10))
    assert plan.candidates == (checkpoint_name(10, 1),), "the root's names alone"


def test_on_a_tie_the_local_copy_is_tried_first_whatever_its_retry() -> None:
    plan = plan_resume([], [checkpoint_name(10, 1, 2), checkpoint_name(10, 1)],
                       [checkpoint_name(10, 1), checkpoint_name(10, 1, 1)])
    assert plan.attempts == (local(10, 1, 1), local(10, 1), root(10, 1, 2), root(10, 1))


def test_generation_orders_before_the_source() -> None:
    plan = plan_resume([record(10, 2)], [], [checkpoint_name(10, 1)])
    assert plan.attempts == (root(10, 2), local(10, 1))


def test_root_names_are_the_union_of_record_and_listing() -> None:
    plan = plan_resume([record(20)], [checkpoint_name(30, 1)], [checkpoint_name(20, 1)])
    assert plan.attempts == (root(30), local(20), root(20))


def test_junk_in_either_folder_is_left_out() -> None:
    plan = plan_resume([], [".tmp-x", "notes"], [".tmp-step-000000010-g0001-ab", "x"])
    assert plan.attempts == () and plan.is_fresh_start
