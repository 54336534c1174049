"""The ranks a process runs, as the training loop sees them: its group, their random
streams, their batches (:mod:`~colabrun.runner.dist.virtual`), and what a resume and a save
ask of them (docs/concepts.md#several-processes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.dist.group import Group, GroupError
from colabrun.runner.dist.layout import Layout, layout_change_problem
from colabrun.runner.dist.streams import RankStreams
from colabrun.runner.dist.virtual import RankStates, VirtualRanks

if TYPE_CHECKING:
    from colabrun.runner.train.resume import ResumePoint

#: kept with the extras of a job of several ranks: the processes that ran them
PROCESSES = "_colabrun_processes"


class Ranks:
    """The ranks of this process, in ``group``.

    Args:
        group: the process's group (its layout says which ranks run here).
    """

    def __init__(self, group: Group) -> None:
        self.group = group
        self.layout: Layout = group.layout
        self.streams = RankStreams(self.layout.hosted, own_device=self.layout.ranks > 1)
        self.virtual = VirtualRanks(self.layout, self.streams, group)

    def check_start(self, point: ResumePoint | None, *, allow_inexact: bool) -> None:
        """Before training: every process starts from the leader's checkpoint (``None``:
        scratch), saved by a layout this one continues exactly (or inexact is allowed).

        Raises:
            GroupError: the processes found different checkpoints (the group restarts).
            HandleError: the layout changed where exactness cannot hold (nothing was
                trained).
        """
        from colabrun.runner.train.restore import MICRO_BATCHES  # it imports this module

        name = None if point is None else point.name
        leaders = self.group.agree(lambda: name)
        if name != leaders:  # a read that failed in one process: the group starts again
            raise GroupError(
                f"process {self.layout.process} would resume from {name or 'scratch'}, the "
                f"leader from {leaders or 'scratch'}")
        if point is None:
            return
        problem = layout_change_problem(
            int(point.extras.get(PROCESSES, 1)), self.layout, allow_inexact=allow_inexact,
            micro_batches=int(point.extras.get(MICRO_BATCHES, 1)))
        if problem is not None:
            raise HandleError(f"cannot resume from {name}: {problem}")

    def gather(self, epoch_rng: Mapping[str, Any] | None) -> RankStates | None:
        """At a save: every rank's streams, now and as the epoch began, on the leader;
        ``None`` in the other processes (the leader writes the checkpoint)."""
        gathered = self.group.gather(RankStates.of(self.streams, epoch_rng))
        return None if gathered is None else RankStates.merged(gathered)

    def stamped(self, extras: Mapping[str, Any]) -> Mapping[str, Any]:
        """``extras``, with the processes that ran the ranks when there are several."""
        return {**extras, PROCESSES: self.layout.processes} if self.layout.ranks > 1 \
            else extras

    def split(self, batch: Any, micro_batches: int) -> Iterator[tuple[Any, float]]:
        """``run.split``: ``(piece, weight)``, each rank's part of this step's batch (one
        rank alone: the batch), each cut into ``micro_batches`` along dim 0."""
        return self.virtual.split(batch, micro_batches)

    def wrap(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """``run.wrap``: ``model``, averaging its gradients across the processes (DDP)
        when there are several; else itself (its virtual ranks' gradients add up in
        ``run.split``)."""
        wrapped = self.group.wrap(model, **kwargs)
        self.virtual.model = wrapped
        return wrapped

