"""Tier 1: what a checkpoint holds for a resume, and putting it back (in memory)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.train.position import EPOCH_START, IN_EPOCH
from colabrun.runner.train.restore import (
    BATCHES_PER_STEP,
    MICRO_BATCHES,
    RNG,
    RNG_EPOCH,
    Restorer,
    save_context,
)
from colabrun.runner.train.resume import ResumePoint
from colabrun.runner.train.rng import capture_rng


def point(where: str, payload: dict[str, Any]) -> ResumePoint:
    return ResumePoint(name="step-000000007-g0001", step=7, epochs_done=1, batch=3,
                       where=where, payload=payload, extras={})


def draws() -> tuple[float, float]:
    return random.random(), float(torch.rand(1))


# -- save_context -----------------------------------------------------------------------


def test_a_mid_epoch_save_holds_the_rng_of_its_epochs_start_too() -> None:
    rng, epoch_rng = {"torch": torch.ones(1)}, {"torch": torch.zeros(1)}
    inside = save_context(IN_EPOCH, extras={"best": 0.9}, micro_batches=2, rng=rng,
                          epoch_rng=epoch_rng)
    assert inside.where == IN_EPOCH and inside.state == {RNG: rng, RNG_EPOCH: epoch_rng}
    assert inside.extras == {"best": 0.9, MICRO_BATCHES: 2, BATCHES_PER_STEP: 0}
    between = save_context(EPOCH_START, extras={}, micro_batches=1, rng=rng,
                           epoch_rng=epoch_rng)
    assert between.state == {RNG: rng}, "between epochs, the next epoch's start is now"


def test_extras_that_json_cannot_hold_are_refused_with_the_fix() -> None:
    with pytest.raises(HandleError, match=r"run.extras must hold JSON values.*\.item\(\)"):
        save_context(EPOCH_START, extras={"best": torch.ones(1)}, micro_batches=1,
                     rng={}, epoch_rng=None)


# -- Restorer -----------------------------------------------------------------------------


def test_the_rng_goes_back_at_the_point_it_was_saved_and_only_once() -> None:
    random.seed(1)
    torch.manual_seed(1)
    saved = capture_rng()
    expected = draws()
    restorer = Restorer(point(IN_EPOCH, {"tracked": {}, RNG: saved}))
    restorer.at(EPOCH_START, {})  # not where it was saved: nothing happens
    random.seed(99)
    torch.manual_seed(99)
    restorer.at(IN_EPOCH, {})
    assert draws() == expected
    restorer.at(IN_EPOCH, {})  # resumed: from here on like any run
    assert draws() != expected


def test_an_epochs_start_gets_the_rng_of_a_mid_epoch_checkpoints_epoch() -> None:
    random.seed(5)
    torch.manual_seed(5)
    at_epoch_start = capture_rng()
    expected = draws()
    restorer = Restorer(point(IN_EPOCH, {"tracked": {}, RNG: capture_rng(),
                                         RNG_EPOCH: at_epoch_start}))
    restorer.at_epoch_start({})
    assert draws() == expected


def test_tracking_a_name_the_checkpoint_lacks_is_refused() -> None:
    restorer = Restorer(point(IN_EPOCH, {"tracked": {"model": {"w": torch.ones(1)}}}))
    with pytest.raises(HandleError, match=r"holds no state for 'optim' \(it holds \['model'\]\)"):
        restorer.load("optim", torch.nn.Linear(1, 1))


def test_loading_puts_the_saved_state_into_the_object() -> None:
    saved = torch.nn.Linear(2, 1).state_dict()
    model = torch.nn.Linear(2, 1)
    Restorer(point(IN_EPOCH, {"tracked": {"model": saved}})).load("model", model)
    assert torch.equal(model.weight, saved["weight"])


def test_going_on_with_state_nobody_tracked_is_refused() -> None:
    restorer = Restorer(point(IN_EPOCH, {"tracked": {"model": {}, "optim": {}}, RNG: {}}))
    with pytest.raises(HandleError, match=r"holds state for \['optim'\].*run.track"):
        restorer.at(IN_EPOCH, {"model": torch.nn.Linear(1, 1)})


def test_a_fresh_start_restores_nothing() -> None:
    model = torch.nn.Linear(1, 1)
    before = model.weight.detach().clone()
    random.seed(3)
    torch.manual_seed(3)
    expected = draws()
    random.seed(3)
    torch.manual_seed(3)
    restorer = Restorer()
    restorer.load("model", model)
    restorer.at_epoch_start({})
    restorer.at(IN_EPOCH, {})
    restorer.check_all_restored({"model": model})
    assert torch.equal(model.weight, before) and draws() == expected
