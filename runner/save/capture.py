"""Taking one save's snapshot and choosing how it is written: the part of a save
the training loop waits for.

:func:`take_snapshot` reads the tracked objects' ``state_dict()``, decides
between a copy and a fork (:func:`~colabrun.runner.save.snapshot.choose_mode`)
and between the writer's modes (:func:`~colabrun.runner.save.task.writer_mode`),
and copies the state into the host buffers unless a forked child will read it
live. :class:`SaveContext` and :class:`SaveReceipt` are what the run handle
passes to a save and gets back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from colabrun.jobs.handle import Stateful
from colabrun.runner.save.snapshot import (
    AUTO,
    FORK,
    FORK_MIN_BYTES,
    HostBuffers,
    choose_mode,
    frozen_bytes,
    live_state,
    parameters_with_gradients,
    tensor_stats,
)
from colabrun.runner.save.task import PROCESS, writer_mode
from colabrun.runner.train.position import EPOCH_START


@dataclass(frozen=True)
class SaveContext:
    """What a checkpoint holds besides the tracked objects.

    Args:
        where: the program point it resumes at (``in_epoch`` or ``epoch_start``).
        extras: small JSON values, kept in the manifest.
        state: more payload entries (the RNG states), snapshotted with the objects.
        metrics: the newest value of each metric logged so far, kept in the manifest
            (what ``checkpoint.keep_best`` compares).
    """

    where: str = EPOCH_START
    extras: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SaveReceipt:
    """A save handed to the background writer.

    Args:
        name: the checkpoint's name, as it will be committed unless that name is taken.
        stall_s: how long the save blocked the caller.
        started_writer: whether it also started a writer process (a one-time cost).
    """

    name: str
    stall_s: float
    started_writer: bool


@dataclass(frozen=True)
class Snapshot:
    """A save's payload as the writer takes it, and how it is written."""

    payload: Mapping[str, Any]
    #: the writer's mode: ``thread``, ``process`` or ``fork``
    mode: str
    #: bytes of tensor data in the tracked state
    nbytes: int
    #: waits for asynchronous device copies (``None``: all were synchronous)
    ready: Callable[[], None] | None = None
    #: ``fork`` and ``process`` modes: the parameters whose gradients a child forked
    #: for this save drops
    gradients_of: Sequence[torch.Tensor] = ()


def checkpoint_meta(tracked: Mapping[str, Stateful], reason: str, context: SaveContext, *,
                    stamp: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``meta`` of a save (a pure function).

    Args:
        tracked: the objects saved (their names are recorded).
        reason: why the save is taken.
        context: where it resumes, and its extras.
        stamp: entries every checkpoint of the session carries.

    Returns:
        ``where``, ``reason``, ``extras``, ``tracked``, the stamp, ``torch_version``,
        then ``metrics`` (new in 0.2: the older keys keep their order).
    """
    return {"where": context.where, "reason": reason, "extras": dict(context.extras),
            "tracked": sorted(tracked), **stamp, "torch_version": torch.__version__,
            "metrics": dict(context.metrics)}


def take_snapshot(tracked: Mapping[str, Stateful], state: Mapping[str, Any], *,
                  requested: str, buffers: HostBuffers, can_fork: bool) -> Snapshot:
    """Snapshot ``{"tracked": {name: state_dict}, **state}`` for one save.

    Args:
        tracked: the objects to save.
        state: more payload entries, copied with them (RNG states).
        requested: the spec's ``checkpoint.snapshot``: ``auto``, ``copy`` or ``fork``.
        buffers: the session's host buffers (reused by every copy).
        can_fork: whether this platform forks a writer safely.

    Returns:
        The payload (live for a fork, else copied into ``buffers``) and its mode.
    """
    live = live_state(tracked)
    nbytes, cuda = tensor_stats(live)
    frozen = frozen_bytes(tracked) if requested == AUTO and nbytes >= FORK_MIN_BYTES else 0
    kind = choose_mode(requested, nbytes=nbytes, on_cuda=cuda, can_fork=can_fork,
                       frozen_bytes=frozen)
    mode = writer_mode(kind, on_cuda=cuda, buffers=buffers)
    payload = {"tracked": live, **state}
    if kind == FORK:
        return Snapshot(payload, mode, nbytes, gradients_of=parameters_with_gradients(tracked))
    # RNG states too: a writer process reads them from shared buffers
    copied, ready = buffers.snapshot(payload)
    if mode != PROCESS:
        buffers.take_sources()  # no writer process will free its view of them
        return Snapshot(copied, mode, nbytes, ready=ready)
    # a writer process forked for this save frees its copy of the gradients too
    return Snapshot(copied, mode, nbytes, ready=ready,
                    gradients_of=parameters_with_gradients(tracked))
