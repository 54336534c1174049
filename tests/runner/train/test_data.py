"""Tier 1: positioning a loader mid-epoch (runner/train/data.py): the shuffle's generator,
samplers and batch samplers colabrun does not compute, and the loaders it can only read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from colabrun.jobs.errors import HandleError
from colabrun.runner.train import exactness
from colabrun.runner.train.data import epoch_order, remaining_batches
from colabrun.runner.train.exactness import InexactResume


@pytest.fixture(autouse=True)
def nothing_said_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(exactness, "_said", set())


def _indices(batches: Any) -> list[list[int]]:
    return [batch.tolist() for batch in batches]


def test_the_shuffle_is_drawn_from_the_generator_given_as_the_users_loader_draws_it() -> None:
    data = list(range(30))
    theirs = DataLoader(data, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(11))
    loader = DataLoader(data, batch_size=4, shuffle=True)
    given = torch.Generator().manual_seed(11)
    for epoch in range(2):  # the same generator on: the draws of each epoch repeat too
        plain = _indices(theirs)
        ours = _indices(remaining_batches(loader, seed=0, epoch=epoch, skip=2, generator=given))
        assert ours == plain[2:]
    assert torch.equal(given.get_state(), theirs.generator.get_state())
    assert plain != _indices(remaining_batches(loader, seed=0, epoch=1, skip=0))
    sequential = DataLoader(data, batch_size=4)
    assert epoch_order(sequential, seed=0, epoch=0, generator=given).tolist() == data


class Buckets(Sampler[list[int]]):
    """A custom batch sampler: batches of uneven sizes, in an order drawn from torch."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size).tolist()
        cuts = [0, 3, 5, 9, 10, 14, self.size]
        return iter([order[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])

    def __len__(self) -> int:
        return 6


def test_a_custom_batch_sampler_is_positioned_keeping_each_batchs_samples() -> None:
    loaded: list[int] = []

    def load(index: int) -> int:
        loaded.append(index)
        return index

    data = _Recorded(load, 17)
    loader = DataLoader(data, batch_sampler=Buckets(17))
    torch.manual_seed(5)
    full = _indices(remaining_batches(loader, seed=0, epoch=0, skip=0))
    assert [len(b) for b in full] == [3, 2, 4, 1, 4, 3]
    torch.manual_seed(5)  # as the loop puts it back at the epoch's start
    loaded.clear()
    rest = _indices(remaining_batches(loader, seed=0, epoch=0, skip=2))
    assert rest == full[2:]
    assert sorted(loaded) == sorted(i for batch in full[2:] for i in batch), "skipped unread"


class _Recorded(torch.utils.data.Dataset[int]):
    def __init__(self, load: Any, size: int) -> None:
        self.load, self.size = load, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return self.load(index)  # type: ignore[no-any-return]


@pytest.mark.parametrize("sampler", [
    WeightedRandomSampler([1.0] * 10, 10),
    RandomSampler(range(10), replacement=True),
], ids=["weighted", "with-replacement"])
def test_other_samplers_repeat_from_the_global_generator(sampler: Sampler[int]) -> None:
    loader = DataLoader(list(range(10)), batch_size=3, sampler=sampler)
    torch.manual_seed(8)
    full = _indices(remaining_batches(loader, seed=0, epoch=0, skip=0))
    torch.manual_seed(8)
    assert _indices(remaining_batches(loader, seed=0, epoch=0, skip=1)) == full[1:]
    assert len(full) == 4


def test_a_sampler_with_a_generator_of_its_own_is_said_to_be_inexact() -> None:
    own = torch.Generator().manual_seed(0)
    loader = DataLoader(list(range(10)), batch_size=3,
                        sampler=WeightedRandomSampler([1.0] * 10, 10, generator=own))
    with pytest.warns(InexactResume, match="WeightedRandomSampler draws from a torch.Generator"):
        list(remaining_batches(loader, seed=0, epoch=0, skip=1))

    def shared(seed: int) -> DataLoader[int]:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(list(range(10)), batch_size=3, generator=generator,
                          sampler=WeightedRandomSampler([1.0] * 10, 10, generator=generator))

    theirs, ours = shared(4), shared(4)
    rest = remaining_batches(ours, seed=0, epoch=0, skip=1, generator=ours.generator)
    assert _indices(rest) == _indices(theirs)[1:]  # no warning (an error here), their order


class Counting(IterableDataset[int]):
    def __iter__(self) -> Iterator[int]:
        return iter(range(10))


def test_loaders_read_to_skip_are_said_to_be_inexact_once() -> None:
    loader = DataLoader(Counting(), batch_size=2)
    assert _indices(remaining_batches(loader, seed=0, epoch=0, skip=0))[0] == [0, 1]
    with pytest.warns(InexactResume, match="of an IterableDataset by reading them") as said:
        rest = _indices(remaining_batches(loader, seed=0, epoch=0, skip=3))
        again = _indices(remaining_batches(loader, seed=0, epoch=0, skip=3))
    assert rest == again == [[6, 7], [8, 9]]
    assert len(said) == 1, "said once per cause"
    with pytest.warns(InexactResume, match="iterable that is not a sequence"):
        assert list(remaining_batches(iter("abc"), seed=0, epoch=0, skip=2)) == ["c"]


def test_a_loader_without_batches_is_refused() -> None:
    loader = DataLoader(list(range(6)), batch_size=None)
    with pytest.raises(HandleError, match="without a batch size"):
        remaining_batches(loader, seed=0, epoch=0, skip=1)
    assert isinstance(loader.sampler, SequentialSampler)


def test_a_batch_sampler_of_the_plain_kind_keeps_drop_last() -> None:
    loader = DataLoader(list(range(10)), batch_sampler=BatchSampler(SequentialSampler(
        range(10)), batch_size=4, drop_last=True))
    assert _indices(remaining_batches(loader, seed=0, epoch=0, skip=1)) == [[4, 5, 6, 7]]
    dropping = DataLoader(list(range(10)), batch_size=4, shuffle=True, drop_last=True)
    assert [len(b) for b in remaining_batches(dropping, seed=0, epoch=0, skip=0)] == [4, 4]
