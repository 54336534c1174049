"""Tier 1 for the decisions :mod:`colabrun.runner.watch.workers` takes about one attempt's
processes (whose end is the attempt's, which follower went quiet, what a stacks dump says):
no processes, a stand-in for each worker's exit status. The group's processes themselves
are tested in :mod:`tests.runner.watch.test_group`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.messages import Ended, Kill, KillReason
from colabrun.runner.watch.restarts import Exit
from colabrun.runner.watch.worker_process import WorkerProcess
from colabrun.runner.watch.workers import (
    _Process,
    largest_micro_batches,
    quiet_follower,
    stacks_said,
    verdict_of,
)


def process(index: int = 0, *, ended: Ended | None = None, returncode: int = 0,
            beat_at: float = 0.0, exited: bool = False) -> _Process:
    """One process as an attempt saw it; its worker only has an exit status."""
    worker = cast(WorkerProcess, SimpleNamespace(returncode=returncode))
    return _Process(worker, index, ended=ended, beat_at=beat_at, exited=exited)


FAILED = Ended(Exit.FAILED, "the training function raised ValueError: rank 1")
CRASHED = Ended(Exit.CRASHED, "its peer left")
COMPLETED = Ended(Exit.COMPLETED, "completed")


def test_one_process_is_its_own_report_whatever_it_said() -> None:
    alone = process(ended=CRASHED)
    assert verdict_of([alone], kill=None, lost=None) == (CRASHED, 0)


def test_one_process_that_died_says_how_without_its_index() -> None:
    alone = process(returncode=-9)
    assert verdict_of([alone], kill=None, lost=alone) == Outcome(Exit.CRASHED,
                                                                 "was killed by SIGKILL")
    assert verdict_of([process(returncode=3)], kill=None, lost=None) == Outcome(
        Exit.CRASHED, "exited with code 3")


def test_a_lost_process_of_a_group_is_named() -> None:
    follower = process(1, returncode=-9)
    outcome = verdict_of([process(ended=CRASHED), follower], kill=None, lost=follower)
    assert outcome == Outcome(Exit.CRASHED, "process 1 was killed by SIGKILL")


def test_a_finished_leader_stands_and_a_followers_failure_wins_over_its_crash() -> None:
    assert verdict_of([process(ended=COMPLETED), process(1, ended=FAILED)],
                      kill=None, lost=None) == (COMPLETED, 0)
    assert verdict_of([process(ended=CRASHED), process(1, ended=FAILED)],
                      kill=None, lost=None) == (FAILED, 1)
    failed_too = Ended(Exit.FAILED, "the training function raised KeyError: 'x'")
    assert verdict_of([process(ended=failed_too), process(1, ended=FAILED)],
                      kill=None, lost=None) == (failed_too, 0)


def test_a_followers_end_is_the_cause_when_it_took_the_group_down() -> None:
    lost = Ended(Exit.CRASHED, "lost its group (a collective failed: Connection closed)")
    killed = process()  # the leader, killed when the follower's end was seen
    assert verdict_of([killed, process(1, ended=FAILED)], kill=None, lost=None) == (FAILED, 1)
    assert verdict_of([process(ended=lost), process(1, ended=FAILED)],
                      kill=None, lost=None) == (FAILED, 1)
    assert verdict_of([killed, process(1, ended=lost)], kill=None, lost=None) == (lost, 1)
    assert verdict_of([process(ended=lost), process(1, ended=lost)],
                      kill=None, lost=None) == (lost, 0)


def test_a_cuda_oom_in_any_process_is_the_attempts() -> None:
    oom = Ended(Exit.OOM, "CUDA out of memory", micro_batches=2)
    assert verdict_of([process(), process(1, ended=oom)], kill=None, lost=None) == (oom, 1)
    group = [process(ended=FAILED), process(1, ended=COMPLETED), process(2, ended=oom)]
    assert verdict_of(group, kill=None, lost=None) == (oom, 2)
    assert largest_micro_batches(group) == 2
    assert largest_micro_batches([process(), process(1)]) is None


def test_a_kill_decides_over_an_unfinished_leader() -> None:
    group = [process(ended=CRASHED), process(1)]
    hung = Kill(KillReason.HUNG, "process 1 hung for 3 s at step 2")
    assert verdict_of(group, kill=hung, lost=None) == Outcome(Exit.HUNG, hung.detail)
    twice = verdict_of(group, kill=Kill.because(KillReason.INTERRUPTED_TWICE), lost=None)
    assert isinstance(twice, Outcome) and (twice.exit, twice.exit_code) == (Exit.STOPPED, 130)


def test_the_quiet_follower_is_the_first_still_on_and_silent_long_enough() -> None:
    group = [process(beat_at=0.0), process(1, beat_at=0.0, ended=FAILED),
             process(2, beat_at=0.0, exited=True), process(3, beat_at=8.0),
             process(4, beat_at=4.0), process(5, beat_at=1.0)]
    assert quiet_follower(group, now=10.0, after_s=5.0) is group[4]
    assert quiet_follower(group, now=10.0, after_s=9.5) is None, "the leader is never one"


def test_what_a_stacks_dump_says() -> None:
    assert stacks_said(None, 0, "stacks.txt", grouped=False) is None
    assert stacks_said("Thread 1", 0, "stacks.txt", grouped=False) == (
        "thread stacks of the hung worker:\nThread 1")
    assert stacks_said("Thread 1", 1, "stacks-p1.txt", grouped=True) == (
        "thread stacks of process 1 (log/stacks-p1.txt):\nThread 1")
    assert stacks_said("", 1, "stacks-p1.txt", grouped=True) == (
        "process 1 wrote no thread stacks to log/stacks-p1.txt (it exited, or did not answer "
        "in time)")
