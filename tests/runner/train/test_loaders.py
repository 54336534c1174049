"""Tier 1: what a checkpoint keeps of the loader itself, and putting it back."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from colabrun.runner.train.loaders import GENERATOR, STATE_DICT, LoaderKeeper, is_stateful_loader
from colabrun.runner.train.position import EPOCH_START, IN_EPOCH
from tests.helpers import REPO

DATA = TensorDataset(torch.arange(20))
#: torchdata 0.11 calls a deprecated torch function as each of its iterators starts
TORCHDATA_WARNS = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def values(batches: Any) -> list[list[int]]:
    return [batch[0].tolist() for batch in batches]


def with_generator() -> DataLoader[Any]:
    return DataLoader(DATA, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))


def test_a_loaders_generator_is_kept_from_before_the_epochs_order_and_redrawn() -> None:
    keeper = LoaderKeeper()
    epoch = values(keeper.open(with_generator(), seed=1, epoch=0, skip=0))
    saved = keeper.state(IN_EPOCH)
    assert saved is not None and set(saved) == {GENERATOR}
    resumed = LoaderKeeper(saved)
    assert values(resumed.open(with_generator(), seed=1, epoch=0, skip=2)) == epoch[2:]


def test_between_epochs_the_generator_is_kept_as_it_is_now() -> None:
    loader = with_generator()
    keeper = LoaderKeeper()
    values(keeper.open(loader, seed=1, epoch=0, skip=0))
    saved = keeper.state(EPOCH_START)
    assert saved is not None and torch.equal(saved[GENERATOR], loader.generator.get_state())
    following = values(keeper.open(loader, seed=1, epoch=1, skip=0))
    assert values(LoaderKeeper(saved).open(with_generator(), seed=1, epoch=1, skip=0)) == \
        following


def test_a_loader_with_nothing_of_its_own_keeps_nothing_until_opened_keeps_the_saved() -> None:
    keeper = LoaderKeeper()
    values(keeper.open(DataLoader(DATA, batch_size=4, shuffle=True), seed=1, epoch=0, skip=0))
    assert keeper.state(IN_EPOCH) is None
    saved = {GENERATOR: torch.Generator().get_state()}
    assert LoaderKeeper(saved).state(EPOCH_START) == saved, "a save before the first batches()"


@TORCHDATA_WARNS
def test_a_stateful_dataloader_is_adopted_and_resumed_by_its_own_state() -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make() -> Any:
        return StatefulDataLoader(DATA, batch_size=4, shuffle=True)

    torch.manual_seed(0)
    loader = make()
    keeper = LoaderKeeper()
    assert is_stateful_loader(loader) and not is_stateful_loader(with_generator())
    batches = iter(keeper.open(loader, seed=1, epoch=0, skip=0))
    first = values([next(batches), next(batches)])
    saved = keeper.state(IN_EPOCH)
    assert saved is not None and set(saved) == {STATE_DICT} and keeper.adopted is loader
    rest = values(batches)
    torch.manual_seed(1)  # the resumed run's global RNG is not what orders the batches
    resumed = LoaderKeeper(saved)
    assert values(resumed.open(make(), seed=1, epoch=0, skip=2)) == rest
    assert len(first + rest) == 5


def test_torchdata_is_imported_only_for_a_loader_of_its_own() -> None:
    code = ("import sys, torch\n"
            "from torch.utils.data import DataLoader, TensorDataset\n"
            "from colabrun.runner.train.loop import Loop\n"
            "from colabrun.runner.train.loaders import LoaderKeeper\n"
            "loader = DataLoader(TensorDataset(torch.arange(8)), batch_size=2, shuffle=True)\n"
            "list(LoaderKeeper().open(loader, seed=1, epoch=0, skip=1))\n"
            "print(sorted(m for m in sys.modules if m.startswith('torchdata')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
