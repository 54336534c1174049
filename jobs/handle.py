"""The training handle: the one object the user's training function receives.

colabrun calls ``train(run)``; ``run`` satisfies :class:`TrainingRun`. The
user keeps their own loop and routes it through the handle::

    def train(run):
        model = Net().to(run.device)
        opt = torch.optim.SGD(model.parameters(), lr=run.params["lr"])
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs():          # only the epochs still to do
            for x, y in run.batches(loader):  # only the batches still to do
                ...
                run.step(loss=loss.item())    # counts a step; saves when due
            run.log(val_acc=evaluate(model))

The implementation lives in ``runner``; this module only states the contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from colabrun.jobs.spec import JobSpec


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict()``/``load_state_dict()``: modules, optimizers,
    schedulers, GradScalers, or the user's own objects."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], /) -> Any: ...


class TrainingRun(Protocol):
    """What the training function may use. See the module docstring for the loop."""

    spec: JobSpec
    device: torch.device
    params: Mapping[str, Any]
    extras: dict[str, Any]
    resumed: bool

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, across all sessions."""

    def track(self, **objects: Any) -> None:
        """Register objects whose state is saved, and restored now if resuming: anything
        :class:`Stateful`, and random generators (``torch.Generator``, NumPy ``Generator``
        or ``RandomState``, ``random.Random``)."""

    def epochs(self) -> Iterator[int]:
        """Yield the epoch numbers still to do."""

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield this epoch's batches still to do, skipping consumed ones unloaded."""

    def split(self, batch: Any) -> Iterator[tuple[Any, float]]:
        """Cut a batch into micro-batches ``(piece, weight)`` (more after a CUDA OOM)."""

    def step(self, **metrics: float) -> None:
        """Count one optimizer step, with optional metrics to log. Accumulating gradients
        over several batches, call it once per optimizer step: saves wait for it."""

    @property
    def rank(self) -> int:
        """This process's first data-parallel rank (0 in the leader)."""

    @property
    def world_size(self) -> int:
        """The job's data-parallel ranks (``distributed.ranks``)."""

    @property
    def is_main(self) -> bool:
        """Whether this process runs rank 0."""

    def wrap(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """``model`` as DDP when the job runs in several processes, else itself."""

    def log(self, **metrics: float) -> None:
        """Record metrics at the current step (e.g. validation accuracy)."""
