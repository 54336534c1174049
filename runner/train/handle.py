"""The run handle the user's training function receives (see :mod:`colabrun.jobs.handle`).

:class:`Run` exposes :class:`~colabrun.jobs.handle.TrainingRun` and nothing else;
what it does happens in its :class:`~colabrun.runner.train.loop.Loop`, which the
runner drives (closing, settling). Benchmarks and tests read what saves cost
through :func:`save_telemetry`, not through the handle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from colabrun.jobs.spec import JobSpec
from colabrun.runner.train.loop import Loop
from colabrun.runner.train.saving import SaveTelemetry


class Run:
    """The concrete :class:`colabrun.jobs.handle.TrainingRun`.

    Args:
        loop: the session's loop, which does what the handle is asked.
    """

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self.spec: JobSpec = loop.spec
        self.device: torch.device = loop.device
        self.params: Mapping[str, Any] = loop.params

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        return self._loop.position.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, across all sessions."""
        return self._loop.position.step

    @property
    def rank(self) -> int:
        """This process's first rank (0 in the leader); with virtual ranks, the others
        follow it (:attr:`world_size` counts them all)."""
        return self._loop.layout.first_rank

    @property
    def world_size(self) -> int:
        """The job's data-parallel ranks (``distributed.ranks``), whatever the processes."""
        return self._loop.layout.ranks

    @property
    def is_main(self) -> bool:
        """Whether this process runs rank 0 (print, evaluate, export there)."""
        return self._loop.layout.is_leader

    @property
    def resumed(self) -> bool:
        """Whether this run continues from a checkpoint."""
        return self._loop.resumed

    @property
    def extras(self) -> dict[str, Any]:
        """Small JSON values saved with every checkpoint (best accuracy so far, say)."""
        self._loop.resolve()
        return self._loop.extras

    @extras.setter
    def extras(self, value: dict[str, Any]) -> None:
        self._loop.resolve()
        self._loop.extras = value

    def track(self, **objects: Any) -> None:
        """Register objects to save; when resuming, load their saved state now. Besides
        objects with ``state_dict()``/``load_state_dict()``, random generators: a
        ``torch.Generator``, a NumPy ``Generator`` or ``RandomState``, a ``random.Random``.

        Raises:
            HandleError: an object has no ``state_dict``/``load_state_dict``, or
                the checkpoint has no state under that name.
        """
        self._loop.track(objects)

    def epochs(self) -> Iterator[int]:
        """Yield the epoch numbers still to do; saves between epochs when due."""
        return self._loop.epochs()

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield the current epoch's batches still to do; saves between batches when due."""
        return self._loop.batches(loader)

    def step(self, **metrics: float) -> None:
        """Count one optimizer step; ``metrics`` (e.g. ``loss=``) go to the metrics log.

        Accumulating gradients over k batches, call it once per optimizer step (after
        ``opt.step()``): a save or stop that falls due in between waits for it.
        """
        self._loop.step(metrics)

    def split(self, batch: Any) -> Iterator[tuple[Any, float]]:
        """Cut a batch into micro-batches along dim 0: ``(piece, weight)``.

        Normally one piece of weight 1. After a CUDA OOM the supervisor restarts
        with twice as many pieces; accumulate gradients over them, scaling each
        piece's mean loss by its weight, and the effective batch is unchanged::

            optimizer.zero_grad()
            for (x, y), weight in run.split(batch):
                (loss_fn(model(x), y) * weight).backward()
            optimizer.step()
        """
        return self._loop.ranks.split(batch, self._loop.micro_batches)

    def log(self, **metrics: float) -> None:
        """Record metrics at the current step (validation accuracy, say)."""
        self._loop.log(metrics)

    def wrap(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """``model``, ready for data-parallel training: a ``DistributedDataParallel``
        (``kwargs`` go to it) when this job runs in several processes, else the model
        itself. Track the model, not what this returns::

            model = Net().to(run.device)
            run.track(model=model, optimizer=opt)
            net = run.wrap(model)
            for (x, y), weight in run.split(batch):
                (loss_fn(net(x), y) * weight).backward()
        """
        return self._loop.ranks.wrap(model, **kwargs)


def save_telemetry(run: Run) -> SaveTelemetry:
    """What saves cost ``run`` so far: for benchmarks and tests, not training functions.

    Args:
        run: a handle the runner made.

    Returns:
        Live views of its stalls, its cost meter, and its last background write.
    """
    return run._loop.saving.telemetry
