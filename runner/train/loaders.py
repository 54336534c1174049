"""The data loader's own state in a checkpoint: what ``run.batches(loader)`` keeps of it.

Two kinds of loader carry state colabrun must keep for an exact resume:

- a ``DataLoader`` built with ``generator=``: each epoch's order is drawn from that
  generator, as plain PyTorch draws it (:func:`~colabrun.runner.train.data.remaining_batches`).
  A checkpoint keeps the generator's state from before the epoch's order was drawn (taken
  mid-epoch) or its state now (taken between epochs); a resume puts it back first, so the
  same order is drawn again.
- a torchdata ``StatefulDataLoader``: adopted. Its ``state_dict()`` is saved with every
  checkpoint, and on resume ``load_state_dict()`` positions it: colabrun neither rebuilds
  nor skips by index. torchdata is never imported: the loader is known by its class's module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from colabrun.jobs.errors import HandleError
from colabrun.runner.train.data import remaining_batches
from colabrun.runner.train.exactness import warn_inexact
from colabrun.runner.train.position import IN_EPOCH

GENERATOR = "generator"  # the loader state's key for a DataLoader's generator
STATE_DICT = "state_dict"  # and for a StatefulDataLoader's state_dict()


def is_stateful_loader(loader: object) -> bool:
    """Whether ``loader`` is a torchdata ``StatefulDataLoader`` (or a subclass of one)."""
    return any(cls.__module__.startswith("torchdata.") for cls in type(loader).__mro__) and \
        callable(getattr(loader, "state_dict", None)) and \
        callable(getattr(loader, "load_state_dict", None))


def loader_generator(loader: object) -> torch.Generator | None:
    """The ``generator=`` a ``DataLoader`` was built with, if any."""
    generator = getattr(loader, "generator", None) if isinstance(loader, DataLoader) else None
    return generator if isinstance(generator, torch.Generator) else None


class LoaderKeeper:
    """Opens each epoch's loader and says what of it a checkpoint keeps.

    Args:
        saved: the loader state of the checkpoint resumed from (``None``: none), put
            back into the first loader opened.
    """

    def __init__(self, saved: Mapping[str, Any] | None = None) -> None:
        self._saved = saved
        self._loader: object | None = None
        self._adopted = False
        self._epoch_start: torch.Tensor | None = None  # the generator before the order

    @property
    def adopted(self) -> object | None:
        """The ``StatefulDataLoader`` being iterated as it is, if any."""
        return self._loader if self._adopted else None

    def generators(self) -> list[object]:
        """The generators the loader's saved state covers (the loader's own)."""
        loader = self._loader
        generator = None if loader is None else getattr(loader, "generator", None)
        return [] if generator is None else [generator]

    def open(self, loader: Iterable[Any], *, seed: int, epoch: int, skip: int,
             ranks: range = range(1), world: int = 1) -> Iterable[Any]:
        """The batches of ``loader`` still to do in ``epoch``, after ``skip`` done steps:
        those of this process's ``ranks`` out of ``world``
        (:func:`~colabrun.runner.train.data.remaining_batches`).

        Raises:
            HandleError: a ``StatefulDataLoader`` with several ranks (it deals its batches
                itself), or a loader that cannot be positioned.
        """
        saved, self._saved = self._saved or {}, None
        if world > 1 and is_stateful_loader(loader):
            raise HandleError(
                "run.batches(): a StatefulDataLoader cannot be dealt to several ranks; give "
                "a torch DataLoader over the same dataset (docs/concepts.md#several-processes)")
        self._loader = loader
        self._adopted = is_stateful_loader(loader) and (skip == 0 or STATE_DICT in saved)
        if self._adopted:
            if STATE_DICT in saved:
                loader.load_state_dict(saved[STATE_DICT])  # type: ignore[attr-defined]
            # iter() draws from torch's global generator: once for a running loader, twice
            # for one loaded from an epoch's end (torchdata 0.11): kept off the training's
            # draws, which would otherwise differ after a resume between epochs
            with torch.random.fork_rng(devices=[]):
                return iter(loader)
        if is_stateful_loader(loader):
            warn_inexact("a StatefulDataLoader resumed from a checkpoint without its state",
                         "its batches are skipped by index in an order of colabrun's; the "
                         "next epoch-end checkpoint is exact again", stacklevel=4)
        generator = loader_generator(loader)
        if generator is not None and GENERATOR in saved:
            generator.set_state(saved[GENERATOR])
        self._epoch_start = None if generator is None else generator.get_state()
        return remaining_batches(loader, seed=seed, epoch=epoch, skip=skip, generator=generator,
                                 ranks=ranks, world=world)

    def state(self, where: str) -> dict[str, Any] | None:
        """What a checkpoint taken at ``where`` keeps of the loader (``None``: nothing)."""
        loader = self._loader
        if loader is None:
            return None if self._saved is None else dict(self._saved)  # not opened yet
        if self._adopted:
            return {STATE_DICT: loader.state_dict()}  # type: ignore[attr-defined]
        generator = loader_generator(loader)
        if generator is None:
            return None
        if where == IN_EPOCH and self._epoch_start is not None:
            return {GENERATOR: self._epoch_start}
        return {GENERATOR: generator.get_state()}
