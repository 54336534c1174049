"""Random draws while loading a batch, seeded by the batch: the same in every session.

Random augmentation in ``Dataset.__getitem__`` draws from the global streams
(``random``, ``np.random``, ``torch``) of whichever process loads the batch: a
``DataLoader`` worker, seeded ``base_seed + worker_id`` when it starts, or the
training process itself with ``num_workers=0``. After a mid-epoch resume the
workers start afresh and the remaining batches are dealt to them differently,
so the draws would differ. Here the rebuilt loader's dataset,
:class:`SeededBatches`, reseeds the three streams before each batch from
``(job seed, epoch, the batch's number in the epoch)`` alone: which worker
loads it, how many there are, and when, no longer matter. In the training
process the loop's own streams are put back after the batch
(:mod:`colabrun.runner.train.streams`), so ``num_workers`` 0, 2 or 3 give the
same run, and a session may resume with another number.

Once per batch, not per sample: torch's map fetcher hands one batch's indices
to ``__getitems__``. Measured on the project's 2-core machine (the ``reseed``
benchmark case, three runs), at batch 32 the reseeding costs 0.5-0.8% of a CIFAR
crop-and-flip augmentation's time per sample in a worker, 1.8-2.4% in the training
process with the save and restore; reseeding before each sample would cost 15-24%.
The draws of one sample then also depend on the samples before it in its batch,
which the epoch's order fixes anyway.

The key is the batch's number, not its first index: samplers that draw with
replacement (``WeightedRandomSampler``) start many batches with the same index,
whose augmentations would repeat. The numbers travel with the indices,
``(number, indices)``, from :class:`NumberedBatches`. The user's ``collate_fn``
runs inside the seeded region too, so a mixup drawn there repeats as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import Dataset, Sampler, get_worker_info

from colabrun.runner.train.streams import Seeds, restore_streams, save_streams, seed_streams

_MASK = 2**64 - 1
_OWN = frozenset({"dataset", "base", "collate_fn"})

Batch = tuple[int, list[int]]  # (the batch's number in its epoch, its dataset indices)


def batch_seeds(base: int, number: int) -> Seeds:
    """The seeds of batch ``number`` of the epoch whose seed is ``base``. Pure.

    SplitMix64 (Steele et al., 2014) of the pair: nearby numbers give unrelated seeds.
    NumPy takes the high 32 bits, torch (a 32-bit Mersenne Twister seed) the low ones.
    """
    z = (base * 0x9E3779B97F4A7C15 + number + 1) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return Seeds(torch=z, numpy=z >> 32, python=z)


class NumberedBatches(Sampler[Batch]):
    """A batch sampler yielding ``(number, indices)``.

    Args:
        batches: the batches to load, each a list of dataset indices.
        numbers: their numbers in the epoch (with several ranks, not consecutive: the
            batches of this process's ranks).
    """

    def __init__(self, batches: Sequence[list[int]], *, numbers: Sequence[int]) -> None:
        self.batches = batches
        self.numbers = numbers

    def __iter__(self) -> Iterator[Batch]:
        return iter(zip(self.numbers, self.batches, strict=True))

    def __len__(self) -> int:
        return len(self.batches)


def already_collated(batch: Any) -> Any:
    """The loader's ``collate_fn``: :meth:`SeededBatches.__getitems__` collated already."""
    return batch


class SeededBatches(Dataset[Any]):
    """``dataset``, loaded a batch at a time under the batch's own seeds.

    Attributes it does not have itself are read from and written to ``dataset``,
    so a ``worker_init_fn`` that opens a file on ``get_worker_info().dataset``
    still reaches the user's dataset.

    Args:
        dataset: the user's map-style dataset.
        base: the epoch's seed.
        collate_fn: the user's loader's, applied inside the seeded region.
    """

    def __init__(self, dataset: Dataset[Any], *, base: int,
                 collate_fn: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.base = base
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def __getitems__(self, batch: Batch) -> Any:
        """Load and collate one batch, its draws seeded by its number."""
        number, indices = batch
        seeds = batch_seeds(self.base, number)
        if get_worker_info() is not None:  # a worker: nothing else draws there
            seed_streams(seeds)
            return self._load(indices)
        saved = save_streams()  # the training process: the loop's draws come next
        try:
            seed_streams(seeds)
            return self._load(indices)
        finally:
            restore_streams(saved)

    def _load(self, indices: list[int]) -> Any:
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return self.collate_fn(samples)

    def __getattr__(self, name: str) -> Any:
        if name in _OWN or name.startswith("__"):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)
