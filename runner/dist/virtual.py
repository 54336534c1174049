"""Virtual ranks: the ranks a process runs one after the other, as if each ran alone.

``run.batches`` gives a process one batch per step: its ranks' batches, joined along
dim 0 (:meth:`VirtualRanks.next_batch`); ``run.split`` cuts it back into them, each
trained under its own rank's random streams, with a weight of ``1 / ranks per process``
(:meth:`VirtualRanks.split`). Their gradients add up as DDP's all-reduce adds up the
processes': with 2 ranks, ``g0 / 2 + g1 / 2`` bit for bit in both (halving is exact). A
process in a group of several keeps DDP from reducing after each piece but the last
(``no_sync``). At a save, each process hands the leader its ranks' streams
(:class:`RankStates`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.dist.group import Group
from colabrun.runner.dist.layout import Layout
from colabrun.runner.dist.streams import RANKS, RankStreams
from colabrun.runner.train.data import split_batch
from colabrun.runner.train.exactness import warn_inexact


def unwrapped(obj: Any) -> Any:
    """The module inside a ``DistributedDataParallel`` (its state's names lack the
    ``module.`` prefix, so checkpoints are the same whichever layout saved them)."""
    from torch.nn.parallel import DistributedDataParallel

    return obj.module if isinstance(obj, DistributedDataParallel) else obj


def join(parts: Sequence[Any]) -> Any:
    """Batches of one structure (tensors, or tuples, lists and dicts of them), joined
    along dim 0.

    Raises:
        HandleError: a part that is neither a tensor nor a tuple, list or dict of them.
    """
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts))
    if isinstance(first, dict):
        return {key: join([part[key] for part in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        joined = [join([part[i] for part in parts]) for i in range(len(first))]
        return type(first)(joined) if isinstance(first, list) else _same_tuple(first, joined)
    raise HandleError(
        f"run.batches(): cannot join the batches of several virtual ranks: a batch holds a "
        f"{type(first).__name__}; give batches of tensors (or tuples, lists, dicts of "
        "them), or run one process per rank (distributed.processes)")


def _same_tuple(like: tuple[Any, ...], items: list[Any]) -> tuple[Any, ...]:
    return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)


def rows(batch: Any) -> int:
    """The rows of a batch along dim 0 (its first tensor's)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return rows(next(iter(batch.values())))
    return rows(batch[0])


def cut(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, dict):
        return {key: cut(value, start, stop) for key, value in batch.items()}
    items = [cut(item, start, stop) for item in batch]
    return type(batch)(items) if isinstance(batch, list) else _same_tuple(batch, items)


class VirtualRanks:
    """Joins a process's ranks' batches, and cuts them back for ``run.split``.

    Args:
        layout: the ranks, and this process's.
        streams: their random streams.
        group: the process's group (DDP's ``no_sync`` between pieces).
    """

    def __init__(self, layout: Layout, streams: RankStreams, group: Group) -> None:
        self.layout = layout
        self.streams = streams
        self.group = group
        #: the model ``run.wrap`` returned (DDP when the group has several processes)
        self.model: torch.nn.Module | None = None
        self._joined: Any = None
        self._sizes: list[int] = []

    def next_batch(self, it: Iterator[Any]) -> Any:
        """This step's batch: the next one, or the next of each rank here, joined.

        Raises:
            StopIteration: the epoch's batches are done.
        """
        per = self.layout.per_process
        if per == 1:
            return next(it)
        parts = [next(it) for _ in range(per)]
        self._joined = join(parts)
        self._sizes = [rows(part) for part in parts]
        return self._joined

    def split(self, batch: Any, micro_batches: int) -> Iterator[tuple[Any, float]]:
        """``(piece, weight)``: each rank's part of ``batch`` (one of this step's joined
        batches), each cut into ``micro_batches``; other batches only into those.

        Each piece trains under its rank's streams; but for the last, DDP keeps its
        gradients local (they are reduced with the last piece's).
        """
        ranked = self._joined is not None and batch is self._joined
        if self._joined is not None and not ranked:
            warn_inexact(
                f"run.split() got another batch than run.batches() gave this process's "
                f"{self.layout.per_process} ranks (a copy, moved to the device?): it trains "
                "as one piece", "pass run.split() the batch itself and move each piece "
                "(docs/concepts.md#several-processes)", stacklevel=4)
        if not ranked and not self.layout.is_grouped:  # one rank, alone: the plain cut
            yield from split_batch(batch, micro_batches)
            return
        sizes = self._sizes if ranked else [0]
        pieces: list[tuple[int, Any, float]] = []
        start = 0
        for index, size in enumerate(sizes):
            rank = self.layout.hosted[index] if ranked else self.streams.first
            part = cut(batch, start, start + size) if ranked else batch
            start += size
            share = 1.0 / len(sizes)
            pieces.extend((rank, piece, weight * share)
                          for piece, weight in split_batch(part, micro_batches))
        for index, (rank, piece, weight) in enumerate(pieces):
            with ExitStack() as context:
                context.enter_context(self.streams.of(rank))
                if index < len(pieces) - 1:
                    context.enter_context(self.group.accumulating(self.model))
                yield piece, weight


@dataclass(frozen=True)
class RankStates:
    """The random streams of some ranks at a save: now, and as the epoch began.

    Args:
        now: each rank's streams now.
        epoch: each rank's streams as the epoch began (empty between epochs).
    """

    now: Mapping[int, Any]
    epoch: Mapping[int, Any]

    @classmethod
    def of(cls, streams: RankStreams, epoch_rng: Mapping[str, Any] | None) -> RankStates:
        """A process's own: its ranks' streams now, and those kept as its epoch began (the
        globals were its first rank's, the others' under :data:`RANKS`)."""
        if epoch_rng is None:
            return cls(streams.states(), {})
        aside = {int(rank): state for rank, state in epoch_rng.get(RANKS, {}).items()}
        return cls(streams.states(), {streams.first: epoch_rng, **aside})

    @classmethod
    def merged(cls, gathered: Sequence[RankStates]) -> RankStates:
        """Every process's, in one."""
        now: dict[int, Any] = {}
        epoch: dict[int, Any] = {}
        for states in gathered:
            now.update(states.now)
            epoch.update(states.epoch)
        return cls(now, epoch)
