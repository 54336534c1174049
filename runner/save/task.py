"""A save handed to the background writer, and the one interface every way of writing
it implements (:class:`WriteStrategy`).

Three strategies, one module each, chosen per save by :func:`writer_mode`:

* ``thread`` (:mod:`colabrun.runner.save.thread_writer`): a daemon thread
  serialises a copied snapshot;
* ``process`` (:mod:`colabrun.runner.save.process_writer`): a long-lived child
  serialises snapshots copied into shared buffers, at a low CPU priority;
* ``fork`` (:mod:`colabrun.runner.save.fork_writer`): a child forked for the save
  serialises the live tensors from its copy-on-write view of memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from colabrun.runner.save.snapshot import FORK, HostBuffers
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.manifest import Manifest
from colabrun.state.rotation import plan_local_rotation

THREAD = "thread"  # a copied snapshot, written by a thread
PROCESS = "process"  # a snapshot in shared buffers, written by a long-lived child
# FORK (from colabrun.runner.save.snapshot): live tensors, written by a child forked for the save

def fork_available() -> bool:
    """Whether this platform can fork a writer safely (Linux only: macOS forks badly)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def writer_mode(snapshot: str, *, on_cuda: bool, buffers: HostBuffers) -> str:
    """How a save whose snapshot was taken as ``snapshot`` is written (a pure decision).

    Args:
        snapshot: ``fork`` (live tensors) or ``copy``.
        on_cuda: whether the tracked state holds CUDA tensors.
        buffers: where a copy went (shared memory or not).

    Returns:
        ``fork`` for live tensors; ``process`` for copies in shared buffers, whatever
        their size (the process frees its view of the live state, so it keeps no
        copy of it: :func:`~colabrun.runner.save.child.release_storages`); ``thread``
        for other copies (CUDA sources, pinned buffers, no fork).
    """
    if snapshot == FORK:
        return FORK
    if buffers.shared and not on_cuda:
        return PROCESS
    return THREAD


@dataclass
class SaveTask:
    """One save: a snapshot and where it sits in the loop.

    ``before_commit`` runs in the training process before the checkpoint can
    commit (to make the metrics it covers durable first); ``ready`` runs before
    serialising (to wait for asynchronous device-to-host copies).
    """

    payload: Mapping[str, Any]
    step: int
    epoch: int
    batch: int
    generation: int
    created_at: float
    meta: Mapping[str, Any]
    expected_bytes: int = 0
    ready: Callable[[], None] | None = None
    before_commit: Callable[[], None] | None = None
    #: where the snapshot's tensors live (``process`` mode: shared buffers)
    buffers: HostBuffers | None = None
    #: ``fork`` and ``process`` modes: parameters whose gradients a child forked for
    #: this save lets go of at once
    gradients_of: Sequence[torch.Tensor] = ()


@dataclass
class WriteStats:
    """What one background write cost."""

    mode: str
    write_s: float = 0.0
    #: CPU seconds the write used (the thread's, or the child's)
    cpu_s: float = 0.0
    #: peak resident memory of a writer forked for the save, in bytes (``fork`` mode only)
    child_max_rss: int = 0


class Written(NamedTuple):
    """A save committed locally: its manifest, and what writing it cost."""

    manifest: Manifest
    stats: WriteStats


@dataclass(frozen=True)
class LocalTarget:
    """Where saves commit, and which local checkpoints survive each commit.

    Args:
        store: the local staging store.
        keep: local checkpoints kept, the new one included.
        protected: the name of a local checkpoint never to remove now (the one
            being uploaded), asked before each save is written.
    """

    store: CheckpointStore
    keep: int
    protected: Callable[[], str | None]

    def commit(self, task: SaveTask, *, protected: str | None) -> Manifest:
        """Commit ``task`` to :attr:`store`, then rotate the local checkpoints.

        Returns:
            The committed checkpoint's manifest.

        Raises:
            CheckpointError: the commit failed (the previous checkpoint is intact).
        """
        manifest = self.store.commit(
            task.payload, step=task.step, epoch=task.epoch, batch=task.batch,
            generation=task.generation, created_at=task.created_at, meta=task.meta,
            expected_bytes=task.expected_bytes)
        names = self.store.list_names()
        for name in plan_local_rotation(names, keep=self.keep, protected=protected):
            self.store.discard(name)
        return manifest


def run_prelude(task: SaveTask) -> None:
    """What a save waits for before it may commit: the metrics it covers, kept
    (``before_commit``), and its device copies, landed (``ready``)."""
    if task.before_commit is not None:
        task.before_commit()
    if task.ready is not None:
        task.ready()


class WriteStrategy(Protocol):
    """One way of writing a save; :class:`~colabrun.runner.save.writer.Writer` holds one
    per mode and has at most one save in flight across them."""

    def begin(self, task: SaveTask) -> bool:
        """Prepare ``task`` in the caller's (training) thread; a fork happens here.

        Returns:
            Whether a writer process was started (for this and later saves).
        """

    def finish(self, task: SaveTask) -> Written:
        """In the writer's thread: run :func:`run_prelude`, then commit ``task``.

        Raises:
            BaseException: the save failed; the previous checkpoint is intact.
        """

    def close(self) -> None:
        """End what the strategy keeps between saves (a writer process)."""
