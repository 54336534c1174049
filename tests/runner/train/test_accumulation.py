"""Gradient accumulation across batches: saves and stops wait for the next ``run.step()``.

Tier 1, the pure decision (:mod:`colabrun.runner.train.boundary`) and the counter;
tier 2, a real SIGTERM delivered to this process in the middle of an accumulation, and
the reseed of a fresh run as training starts (runner.run in-process).
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun import runner
from colabrun.jobs.spec import CheckpointPolicy, JobSpec
from colabrun.runner.train.boundary import Decision, Situation, decide, is_mid_accumulation
from colabrun.runner.train.saving import Accumulation
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, final_payload

EVERY_4 = CheckpointPolicy(every_steps=4, every_s=None, at_epoch_end=True, max_overhead=None)


def situation(**fields: Any) -> Situation:
    return Situation(**{"steps_since_save": 4, "seconds_since_save": 1.0, **fields})


@pytest.mark.parametrize(("since", "per_step", "expected"), [
    (0, 4, False),  # right after run.step(): the accumulation boundary
    (1, 4, True), (3, 4, True),
    (4, 4, False),  # past the longest accumulation seen: not held (a stop must come)
    (2, 0, False),  # no run.step() seen yet: today's behaviour
    (1, 1, False),  # a step every batch
])
def test_mid_accumulation_is_strictly_between_two_steps(since: int, per_step: int,
                                                        expected: bool) -> None:
    assert is_mid_accumulation(batches_since_step=since, batches_per_step=per_step) is expected


def test_mid_accumulation_a_due_save_and_a_stop_are_held() -> None:
    assert decide(EVERY_4, situation(mid_accumulation=True)) == Decision(held=True)
    stop = situation(mid_accumulation=True, stop_reason="interrupted")
    assert decide(EVERY_4, stop) == Decision(stop="interrupted", held=True)
    assert decide(EVERY_4, situation(steps_since_save=1, mid_accumulation=True)).goes_on, \
        "nothing due: nothing held"
    assert decide(EVERY_4, replace(stop, mid_accumulation=False)) == Decision(
        save="every_steps", stop="interrupted"), "at the boundary after the step: both"


def test_an_epoch_end_held_is_owed_to_the_next_boundary_after_a_step() -> None:
    owed = situation(steps_since_save=1, epoch_end_owed=True)
    assert decide(EVERY_4, owed) == Decision(save="epoch_end")
    assert decide(EVERY_4, situation(steps_since_save=0)).goes_on


def test_the_counter_learns_the_accumulation_from_the_steps() -> None:
    counter = Accumulation()
    for _ in range(3):
        counter.on_batch()
    assert not counter.is_mid, "no step seen yet"
    counter.on_step()
    counter.on_batch()
    assert counter.batches_per_step == 3 and counter.is_mid
    counter.on_step()
    counter.on_step()  # two optimizers stepping after one batch
    assert counter.batches_per_step == 3 and not counter.is_mid


# -- in-process: a real SIGTERM mid-accumulation ----------------------------------------------

SEEN: list[int] = []


def _accumulate(run: Any) -> None:
    every, stop_after = int(run.params["every"]), int(run.params["stop_after"])
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run.track(model=model, optimizer=optimizer)
    batches = [torch.ones(2, 3) * i for i in range(12)]
    for _ in run.epochs():
        for x in run.batches(batches):
            model(x).sum().backward()
            SEEN.append(run.global_step)
            if len(SEEN) == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)  # colabrun stop, Ctrl-C: the same request
            if len(SEEN) % every == 0:
                optimizer.step()
                optimizer.zero_grad()
                run.step()


def _spec(root: Path, **params: Any) -> JobSpec:
    return JobSpec(name="acc", entrypoint=_accumulate, epochs=2, params=params, root=str(root),
                   local_dir=str(root / "local"), supervise=False,
                   checkpoint={"every_steps": 100, "every_s": None, "at_epoch_end": True})


@pytest.mark.parametrize(("every", "stop_after", "saved_batch"), [
    (4, 6, 8),  # mid-accumulation: 2 more batches, then run.step(), then save and stop
    (1, 6, 6),  # a step every batch: saved and stopped after that batch
])
def test_a_stop_mid_accumulation_saves_and_stops_after_the_next_step(
        tmp_path: Path, every: int, stop_after: int, saved_batch: int) -> None:
    SEEN.clear()
    result = runner.run(_spec(tmp_path, every=every, stop_after=stop_after))
    assert result.status is Status.STOPPED
    assert len(SEEN) == saved_batch, "no batch after the save, none cut short before it"
    state = StateFile(tmp_path / "acc", Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    assert (state.latest_checkpoint.batch, state.latest_checkpoint.step) == (
        saved_batch, saved_batch // every)


# -- a fresh run's training does not depend on what setup drew ---------------------------------

_SETUP_DRAWS = [3, 0]  # the first run's setup draws (an import drawing once), the second's not


def _draws_in_setup(run: Any) -> None:
    for _ in range(_SETUP_DRAWS.pop(0)):
        random.random()
        torch.rand(1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(3, 1))
    torch.nn.init.ones_(model[1].weight)  # not drawn: only training's draws may differ
    torch.nn.init.zeros_(model[1].bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run.track(model=model, optimizer=optimizer)
    for _ in run.epochs():
        for x in run.batches([torch.ones(4, 3)] * 3):
            model(x * random.random()).sum().backward()
            optimizer.step()
            run.step()


def test_a_fresh_run_trains_alike_whatever_its_setup_drew(tmp_path: Path) -> None:
    finals = []
    for name in ("first", "second"):
        spec = JobSpec(name=name, entrypoint=_draws_in_setup, epochs=1, root=str(tmp_path),
                       local_dir=str(tmp_path / "local"), supervise=False)
        assert runner.run(spec).status is Status.COMPLETED
        finals.append(final_payload(tmp_path / name))
    assert_exactly_equal(finals[0]["model"], finals[1]["model"])
