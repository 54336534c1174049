"""Tier 1/2: random draws while loading a batch repeat, whichever process loads it.

The rebuilt loader (runner/train/data.py) seeds each batch by its number
(runner/train/batch_seed.py); in the training process it puts the loop's own
streams back afterwards (runner/train/streams.py). Real DataLoader workers here;
the SIGKILL-and-resume tier is tests/runner/test_exact_workers.py.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from colabrun.runner.train.batch_seed import SeededBatches, batch_seeds
from colabrun.runner.train.data import remaining_batches
from colabrun.runner.train.streams import (
    mt_state_address,
    python_words,
    restore_streams,
    save_streams,
    seed_streams,
)

SIZE, BATCH = 24, 4


class Drawing(Dataset[torch.Tensor]):
    """Each sample: its index, then a draw from torch, NumPy (uniform and Gaussian) and
    Python (uniform and Gaussian)."""

    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index), torch.rand(()).item(), np.random.rand(),
                             np.random.normal(), random.random(), random.gauss(0.0, 1.0)],
                            dtype=torch.float64)


def mixup(samples: list[torch.Tensor]) -> torch.Tensor:
    """A collate_fn that draws too (as a mixup would)."""
    batch = torch.stack(samples)
    return torch.cat([batch, torch.rand(len(samples), 1, dtype=torch.float64)], dim=1)


def _epoch(workers: int, *, skip: int = 0, **options: Any) -> torch.Tensor:
    loader = DataLoader(Drawing(), batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=mixup, **options)
    return torch.cat(list(remaining_batches(loader, seed=3, epoch=1, skip=skip)))


def _streams() -> tuple[Any, ...]:
    numpy_state: Any = np.random.get_state()
    kind, key, pos, has_gauss, gauss = numpy_state
    return (random.getstate(), kind, key.tolist(), pos, has_gauss, gauss,
            torch.get_rng_state().tolist())


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_the_draws_depend_on_the_batch_not_on_the_workers_or_the_skip() -> None:
    alone = _epoch(0)
    assert torch.equal(_epoch(2), alone)
    assert torch.equal(_epoch(3, persistent_workers=True, prefetch_factor=3), alone)
    assert torch.equal(_epoch(2, skip=3), alone[3 * BATCH:])
    assert torch.equal(_epoch(0, skip=5), alone[5 * BATCH:])
    draws = alone[:, 1:]
    assert len(set(draws[:, 0].tolist())) == SIZE, "each sample draws its own numbers"
    assert not torch.equal(draws[:BATCH], draws[BATCH:2 * BATCH]), "batches differ"


@pytest.mark.parametrize("gaussian_cached", [False, True], ids=["cache-empty", "cache-full"])
def test_loading_in_the_training_process_leaves_its_streams_as_they_were(
    gaussian_cached: bool,
) -> None:
    random.seed(1)
    random.gauss(0.0, 1.0)  # Python's Gaussian cache full too
    np.random.seed(2)
    if gaussian_cached:
        np.random.normal()  # one of a pair: the other is cached
    torch.manual_seed(3)
    before = _streams()
    _epoch(0)
    assert _streams() == before
    assert _streams()[4] == int(gaussian_cached)  # NumPy's Gaussian cache as it was


def test_the_streams_come_back_without_the_fast_path_too() -> None:
    np.random.seed(4)
    np.random.normal()
    before = _streams()
    saved = save_streams(locate=lambda: None)
    np.random.seed(5)
    random.seed(5)
    torch.default_generator.manual_seed(5)
    np.random.normal()
    restore_streams(saved)
    assert _streams() == before


@pytest.mark.skipif(not hasattr(np.random, "set_bit_generator"), reason="numpy >= 1.25")
def test_another_global_bit_generator_comes_back_too() -> None:
    original = np.random.mtrand._rand._bit_generator
    np.random.set_bit_generator(np.random.PCG64(6))
    try:
        assert mt_state_address() is None
        before = str(np.random.get_state(legacy=False))
        SeededBatches(Drawing(), base=1, collate_fn=torch.stack).__getitems__((0, [1, 2]))
        assert str(np.random.get_state(legacy=False)) == before
    finally:
        np.random.set_bit_generator(original)
    assert mt_state_address() is not None


def test_the_numpy_words_are_found_only_where_laid_out_as_expected() -> None:
    assert mt_state_address() is not None  # numpy's global MT19937 on this numpy
    from colabrun.runner.train.streams import _layout_checked

    assert _layout_checked(np.random.PCG64(0)) is None


def test_pythons_words_are_read_in_place_and_come_back_with_its_gaussian_cache() -> None:
    found = python_words()
    assert found is not None and found[0] is random.getstate.__self__  # CPython's layout
    random.seed(7)
    random.gauss(0.0, 1.0)  # one of a pair: the other waits in gauss_next
    before = random.getstate()
    saved = save_streams()
    seed_streams(batch_seeds(9, 1))
    random.random()
    random.gauss(0.0, 1.0)
    restore_streams(saved)
    assert random.getstate() == before
    twin = random.Random()
    twin.setstate(before)
    assert [random.gauss(0.0, 1.0), random.random()] == [twin.gauss(0.0, 1.0), twin.random()]


def test_another_python_generator_behind_the_module_comes_back_through_getstate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Own(random.Random):
        """A subclass: its layout is not checked, getstate()/setstate() are used."""

    own = Own(11)
    for name in ("getstate", "setstate", "seed", "random"):
        monkeypatch.setattr(random, name, getattr(own, name))
    assert python_words() is None
    before = own.getstate()
    saved = save_streams()
    seed_streams(batch_seeds(9, 2))
    own.random()
    restore_streams(saved)
    assert own.getstate() == before
    monkeypatch.undo()
    assert python_words() is not None


def test_batch_seeds_differ_by_batch_and_epoch_and_repeat() -> None:
    seeds = {batch_seeds(base, number) for base in (0, 1, 2) for number in range(100)}
    assert len(seeds) == 300
    assert batch_seeds(7, 3) == batch_seeds(7, 3)
    one = batch_seeds(7, 3)
    assert len({one.torch & 0xFFFFFFFF, one.numpy}) == 2, "torch and NumPy get other words"


class WithGetitems(Drawing):
    """A dataset loading a batch at once (torch's fetcher calls ``__getitems__``)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        self.calls.append(list(indices))
        return [self[i] for i in indices]


def test_the_wrapper_loads_through_the_datasets_getitems_and_passes_its_attributes() -> None:
    inner = WithGetitems()
    wrapper = SeededBatches(inner, base=5, collate_fn=torch.stack)
    batch = wrapper.__getitems__((2, [4, 1, 0]))
    assert inner.calls == [[4, 1, 0]] and batch[:, 0].tolist() == [4.0, 1.0, 0.0]
    assert torch.equal(wrapper.__getitems__((2, [4, 1, 0])), batch), "same number, same draws"
    assert not torch.equal(wrapper.__getitems__((3, [4, 1, 0]))[:, 1:], batch[:, 1:])
    assert len(wrapper) == SIZE and wrapper[3][0] == 3.0
    wrapper.handle = "opened in worker_init_fn"
    assert inner.handle == "opened in worker_init_fn"  # type: ignore[attr-defined]
    assert wrapper.calls is inner.calls
    copy = pickle.loads(pickle.dumps(wrapper))  # as a spawned worker receives it
    assert copy.base == 5 and copy.handle == "opened in worker_init_fn"
