"""This epoch's batches still to do, skipped at the sampler level.

A ``DataLoader`` is rebuilt over the same dataset with a batch sampler that
yields only the batches not yet consumed: skipped batches are never loaded.
The order of an epoch comes from a generator seeded by ``(seed, epoch)`` alone,
never from the global RNG, so it is the same in every session; or, when the loop
passes the user's loader's ``generator`` (restored to its epoch-start state), from
that one, as the user's loader would draw it. A sampler of another kind, or a
custom ``batch_sampler``, is iterated whole when the epoch's batches are asked
for, at the same program point in every session, and the first ``skip`` batches
dropped. The rebuilt loader's dataset seeds the draws of each batch by the
batch's number (:mod:`colabrun.runner.train.batch_seed`), whichever worker loads
it. What cannot be positioned (an ``IterableDataset``, an iterable that is not a
sequence) is read and dropped, with an
:class:`~colabrun.runner.train.exactness.InexactResume` warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

from colabrun.jobs.errors import HandleError
from colabrun.runner.train.batch_seed import NumberedBatches, SeededBatches, already_collated
from colabrun.runner.train.exactness import warn_inexact


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order: distinct per epoch, fixed per job."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


def epoch_order(loader: DataLoader[Any], *, seed: int, epoch: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The dataset indices of one epoch, in order.

    Args:
        loader: a loader over a map-style dataset, with a sequential or random sampler.
        seed: the job's seed.
        epoch: the epoch number.
        generator: where a shuffle is drawn from (the user's loader's, at its epoch-start
            state), as the user's loader draws it; ``None``: a generator seeded by
            :func:`epoch_seed`.

    Raises:
        HandleError: the loader's sampler is neither sequential nor random (without
            replacement, over the whole dataset).
    """
    size = len(loader.dataset)  # type: ignore[arg-type]
    if isinstance(loader.sampler, SequentialSampler):
        return torch.arange(size)
    if _is_plain_shuffle(loader.sampler, size):
        if generator is not None:
            return _drawn_as_pytorch_does(size, generator)
        seeded = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return torch.randperm(size, generator=seeded)
    raise HandleError(
        f"run.batches(): cannot compute the order of a DataLoader whose sampler is "
        f"{type(loader.sampler).__name__}; use shuffle=True or shuffle=False with a "
        "map-style dataset and batch_size"
    )


def _drawn_as_pytorch_does(size: int, generator: torch.Generator) -> torch.Tensor:
    """The order a ``DataLoader(shuffle=True, generator=generator)`` iterates, with the same
    draws: the iterator's base seed, then the ``RandomSampler``'s permutation (and, once
    exhausted, one more that it discards), so that the user's loader would see the same
    orders, epoch after epoch, without colabrun."""
    _draw_base_seed(generator)
    return torch.tensor(list(RandomSampler(range(size), generator=generator)), dtype=torch.int64)


def _draw_base_seed(generator: torch.Generator) -> None:
    """What a ``DataLoader``'s iterator draws from its generator before its sampler does:
    its workers' base seed (the rebuilt loader seeds its workers by the batch instead)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)


def _is_plain_shuffle(sampler: object, size: int) -> bool:
    return (isinstance(sampler, RandomSampler) and not sampler.replacement
            and sampler.num_samples == size)


def epoch_batches(loader: DataLoader[Any], *, seed: int, epoch: int,
                  generator: torch.Generator | None = None) -> list[list[int]]:
    """All the batches of one epoch of a map-style ``loader``, as lists of indices.

    A sequential or shuffling sampler's order is computed (:func:`epoch_order`); any
    other sampler or batch sampler is iterated, drawing as the user's loader would
    (from ``generator`` too, when given, as :func:`epoch_order` says).

    Raises:
        HandleError: the loader has neither a batch size nor a batch sampler, or its
            batch sampler has no ``len()``.
    """
    size = len(loader.dataset)  # type: ignore[arg-type]
    batch_size = loader.batch_size
    known = isinstance(loader.sampler, SequentialSampler) or _is_plain_shuffle(loader.sampler,
                                                                               size)
    if batch_size is None or not known:
        if generator is not None:
            _draw_base_seed(generator)
        return _drawn_batches(loader)
    order = epoch_order(loader, seed=seed, epoch=epoch, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, size, batch_size)]
    if loader.drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _drawn_batches(loader: DataLoader[Any]) -> list[list[int]]:
    batch_sampler = loader.batch_sampler
    if batch_sampler is None or loader_length(batch_sampler) is None:
        raise HandleError(
            "run.batches(): cannot resume a DataLoader without a batch size, or whose "
            "sampler has no len(); give it batch_size= and a sampler with a length"
        )
    sampler = getattr(batch_sampler, "sampler", loader.sampler)
    own = getattr(sampler, "generator", None)
    if isinstance(own, torch.Generator) and own is not loader.generator:
        warn_inexact(
            f"run.batches() got a DataLoader whose {type(sampler).__name__} draws from a "
            "torch.Generator of its own",
            "give the same generator to the DataLoader too (DataLoader(..., generator=g)), "
            "which colabrun puts back at each epoch's start (docs/concepts.md"
            "#rules-for-a-bit-exact-resume)", stacklevel=7)  # the user's for loop
    return [list(batch) for batch in batch_sampler]


def shard_numbers(count: int, *, skip: int, ranks: range, world: int) -> list[int]:
    """The numbers of the batches a process loads, in the order it trains them. Pure.

    Step ``i`` of an epoch trains batches ``i * world + r``, one per rank ``r``; a process
    loads those of its ``ranks``, step after step, from step ``skip`` on. The last
    ``count % world`` batches of an epoch are left out: every rank takes as many steps.
    """
    return [i * world + r for i in range(skip, count // world) for r in ranks]


def steps_per_epoch(loader: Iterable[Any], world: int) -> int | None:
    """The optimizer steps of one epoch with ``world`` ranks (``None`` without ``len``)."""
    count = loader_length(loader)
    return None if count is None else count // world


def remaining_batches(
    loader: Iterable[Any], *, seed: int, epoch: int, skip: int,
    generator: torch.Generator | None = None, ranks: range = range(1), world: int = 1,
) -> Iterable[Any]:
    """The batches of ``loader`` for ``epoch`` after the first ``skip`` steps: this
    process's ranks' (:func:`shard_numbers`), one rank's after the other at each step.

    Args:
        loader: a ``DataLoader`` over a map-style dataset, or a sequence of batches.
        seed: the job's seed.
        epoch: the epoch number (fixes the shuffle order).
        skip: steps already taken in this epoch.
        generator: the shuffle's generator, at its epoch-start state (see
            :func:`epoch_order`); ``None``: one seeded by ``(seed, epoch)``.
        ranks: the ranks this process runs.
        world: the job's ranks.

    Raises:
        HandleError: a ``DataLoader`` that cannot be positioned (see :func:`epoch_batches`),
            or a loader of unknown length with several ranks (it cannot be sharded).
    """
    if isinstance(loader, DataLoader):
        if isinstance(loader.dataset, IterableDataset):
            _refuse_sharding(world, "an IterableDataset")
            return _skip_by_reading(loader, skip, what="an IterableDataset",
                                    fix="use a map-style dataset (__getitem__ and __len__)")
        return _rebuild(loader, seed=seed, epoch=epoch, skip=skip, generator=generator,
                        ranks=ranks, world=world)
    if isinstance(loader, Sequence):
        if world == 1:
            return loader[skip:]
        return [loader[n] for n in shard_numbers(len(loader), skip=skip, ranks=ranks,
                                                 world=world)]
    _refuse_sharding(world, "an iterable that is not a sequence")
    return _skip_by_reading(loader, skip, what="an iterable that is not a sequence",
                            fix="give a DataLoader over a map-style dataset, or a list")


def _refuse_sharding(world: int, what: str) -> None:
    if world > 1:
        raise HandleError(
            f"run.batches(): cannot deal the batches of {what} to {world} ranks; give a "
            "DataLoader over a map-style dataset (__getitem__ and __len__), or a list of "
            "batches (docs/concepts.md#several-processes)")


def _rebuild(loader: DataLoader[Any], *, seed: int, epoch: int, skip: int,
             generator: torch.Generator | None, ranks: range, world: int) -> DataLoader[Any]:
    with _shared_draws(seed, epoch) if world > 1 else nullcontext():
        batches = epoch_batches(loader, seed=seed, epoch=epoch, generator=generator)
    numbers = shard_numbers(len(batches), skip=skip, ranks=ranks, world=world)
    base = epoch_seed(seed, epoch)
    workers = loader.num_workers
    return DataLoader(
        SeededBatches(loader.dataset, base=base, collate_fn=loader.collate_fn),
        # (number, indices) pairs, where torch expects indices: for SeededBatches alone
        batch_sampler=NumberedBatches(  # type: ignore[arg-type]
            [batches[n] for n in numbers], numbers=numbers),
        num_workers=workers,
        collate_fn=already_collated,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=torch.Generator().manual_seed(base + 1),
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )


@contextmanager
def _shared_draws(seed: int, epoch: int) -> Iterator[None]:
    """Torch's global generator, seeded from ``(seed, epoch)`` alone for the block, then
    put back: with several ranks, a sampler that draws from it deals the same batches in
    every process (each holds another rank's stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed(seed, epoch) + 2)
        yield


def _skip_by_reading(loader: Iterable[Any], skip: int, *, what: str, fix: str
                     ) -> Iterable[Any]:
    if skip:
        warn_inexact(f"run.batches() skips the batches done of {what} by reading them",
                     f"{fix}: colabrun positions those without loading, and seeds "
                     "their draws (docs/concepts.md#rules-for-a-bit-exact-resume)",
                     stacklevel=5)  # the user's for loop
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
