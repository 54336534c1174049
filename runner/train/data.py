"""This epoch's batches still to do, skipped at the sampler level.

A ``DataLoader`` is rebuilt over the same dataset with a sampler that yields
only the indices not yet consumed: skipped batches are never loaded. The
order of an epoch comes from a generator seeded by ``(seed, epoch)`` alone,
never from the global RNG, so it is the same in every session; the loader's
own generator (worker seeds) is seeded the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler

from colabrun.jobs.errors import HandleError


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order: distinct per epoch, fixed per job."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


class _IndexSampler(Sampler[int]):
    """Yields a fixed list of indices."""

    def __init__(self, indices: torch.Tensor) -> None:
        self.indices = indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)


def epoch_order(loader: DataLoader[Any], *, seed: int, epoch: int) -> torch.Tensor:
    """The dataset indices of one epoch, in order.

    Raises:
        HandleError: the loader's sampler is neither sequential nor random.
    """
    size = len(loader.dataset)  # type: ignore[arg-type]
    if isinstance(loader.sampler, SequentialSampler):
        return torch.arange(size)
    if isinstance(loader.sampler, RandomSampler) and not loader.sampler.replacement:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return torch.randperm(size, generator=generator)
    raise HandleError(
        f"run.batches(): cannot resume a DataLoader whose sampler is "
        f"{type(loader.sampler).__name__}; use shuffle=True or shuffle=False with a "
        "map-style dataset and batch_size, or yield batches from a list"
    )


def remaining_batches(
    loader: Iterable[Any], *, seed: int, epoch: int, skip: int
) -> Iterable[Any]:
    """The batches of ``loader`` for ``epoch`` after the first ``skip``.

    Args:
        loader: a ``DataLoader`` over a map-style dataset, or a sequence of batches.
        seed: the job's seed.
        epoch: the epoch number (fixes the shuffle order).
        skip: batches already consumed in this epoch.
    """
    if isinstance(loader, DataLoader):
        if isinstance(loader.dataset, IterableDataset):
            return _skip_by_reading(loader, skip)
        return _rebuild(loader, seed=seed, epoch=epoch, skip=skip)
    if isinstance(loader, Sequence):
        return loader[skip:]
    return _skip_by_reading(loader, skip)


def _rebuild(loader: DataLoader[Any], *, seed: int, epoch: int, skip: int) -> DataLoader[Any]:
    if loader.batch_size is None:
        raise HandleError(
            "run.batches(): cannot resume a DataLoader built with a custom batch_sampler; "
            "give it batch_size= and shuffle= instead"
        )
    order = epoch_order(loader, seed=seed, epoch=epoch)
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=_IndexSampler(order[skip * loader.batch_size :]),
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=torch.Generator().manual_seed(epoch_seed(seed, epoch) + 1),
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )


def _skip_by_reading(loader: Iterable[Any], skip: int) -> Iterable[Any]:
    if skip:
        warnings.warn(
            f"run.batches(): this loader cannot skip by index; reading and dropping {skip} "
            "batches (use a map-style dataset to skip without loading)",
            RuntimeWarning,
            stacklevel=3,
        )
    return islice(loader, skip, None)


def loader_length(loader: Iterable[Any]) -> int | None:
    """Batches per epoch, if the loader knows (``None`` for an iterable without ``len``)."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def split_batch(batch: Any, pieces: int) -> Iterator[tuple[Any, float]]:
    """Cut ``batch`` (a tensor, or a tuple/list/dict of them) into ``pieces`` along dim 0.

    Yields:
        ``(piece, weight)`` where ``weight`` is the piece's share of the batch.

    Raises:
        HandleError: the batch has fewer rows than pieces (the micro-batch would be empty).
    """
    size = _rows(batch)
    if pieces <= 1:
        yield batch, 1.0
        return
    if size < pieces:
        raise HandleError(
            f"run.split(): cannot cut a batch of {size} into {pieces} micro-batches; the batch "
            "no longer fits in GPU memory even one sample at a time: use a smaller model"
        )
    bounds = [i * size // pieces for i in range(pieces + 1)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        yield _slice(batch, start, stop), (stop - start) / size


def _rows(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _rows(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _rows(batch[0])
    raise HandleError(f"run.split(): cannot split a {type(batch).__name__}; give tensors")


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, dict):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    return type(batch)(_slice(item, start, stop) for item in batch)
