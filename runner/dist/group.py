"""The group a training process trains in: alone (:class:`Solo`), or with the other
processes of its job (:class:`Joined`), through torch.distributed.

The loop asks the group two things beyond the gradients' all-reduce (which DDP does):

- :meth:`Group.agree`: what to do at a boundary (save, stop) is decided by the leader
  alone and read by the others from the c10d key-value store (one ``get`` per boundary,
  tens of microseconds), never by a collective at every step;
- :meth:`Group.gather`: at a save, each process's own state (the random streams of its
  ranks) goes to the leader, which writes the checkpoint.

Timeouts: the rendezvous waits up to ``watchdog.setup_s`` for every process, and a
collective up to twice ``watchdog.stall_floor_s`` (the caller's choice): a peer that died
makes the others raise at once (gloo sees its socket close), one that hangs is found by the
supervisor's stall watch first, which dumps every process's stacks
(docs/concepts.md#several-processes); never torch's default 10-30 minutes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, is_dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from colabrun.runner.dist.layout import Layout

T = TypeVar("T")

#: decisions kept in the store at most: the leader deletes older ones (a follower is never
#: that many boundaries behind: DDP's all-reduce holds each step to the slowest process)
KEPT_DECISIONS = 1024
#: what a failing collective or store says: a peer died, hung or closed the connection
GROUP_FAILURES = ("Connection closed by peer", "Connection reset by peer", "Timed out",
                  "timed out", "pair closure", "Broken pipe", "NCCL", "gloo")


class GroupError(RuntimeError):
    """The processes of a group disagree, or lost one another: the group restarts."""


def is_group_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) came from the group rather than
    from the training function's own code: torch.distributed's errors, a collective that
    failed in DDP's backward (a plain ``RuntimeError`` naming gloo's or NCCL's transport),
    or :class:`GroupError`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (GroupError, torch.distributed.DistError)):
            return True
        if isinstance(seen, RuntimeError) and any(mark in str(seen)
                                                  for mark in GROUP_FAILURES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _encode(value: Any) -> bytes:
    """A decision as JSON (never pickle: the store listens on the network)."""
    return json.dumps(asdict(value) if is_dataclass(value) and not isinstance(value, type)
                      else value).encode()


class Group:
    """A process training alone: its layout may still hold several virtual ranks.

    Args:
        layout: the ranks, and this process among the processes.
    """

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout()

    def agree(self, decide: Callable[[], T], kind: type[T] | None = None) -> T:
        """What the leader decides: called here on the leader, read elsewhere (sent as
        JSON: ``decide`` returns a JSON value, or a dataclass of them, given as ``kind``)."""
        return decide()

    def gather(self, value: T) -> list[T] | None:
        """Every process's ``value`` in process order, on the leader; ``None`` elsewhere."""
        return [value]

    def wrap(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """``model``, made to average its gradients across the processes (DDP)."""
        return model

    def accumulating(self, model: torch.nn.Module | None) -> AbstractContextManager[Any]:
        """Around a virtual rank's backward that is not the process's last: the
        gradients add up locally (DDP's ``no_sync``) and are reduced after the last."""
        return nullcontext()

    def close(self) -> None:
        """Leave the group (nothing to leave alone)."""


class Joined(Group):
    """A process of a group of several, joined through a c10d ``TCPStore``.

    Args:
        layout: the ranks, and this process among the processes.
        address: host and port of the leader's store.
        setup_s: how long the rendezvous waits for every process.
        collective_s: how long a collective waits for a peer.
        device: the device trained on (NCCL's collectives run on the process's GPU).
    """

    def __init__(self, layout: Layout, address: tuple[str, int], *, setup_s: float,
                 collective_s: float, device: torch.device | None = None) -> None:
        super().__init__(layout)
        host, port = address
        store = dist.TCPStore(  # type: ignore[attr-defined]
            host, port, world_size=layout.processes, is_master=layout.is_leader,
            timeout=timedelta(seconds=setup_s), wait_for_workers=True)
        prefixed = dist.PrefixStore  # type: ignore[attr-defined]
        dist.init_process_group(layout.backend, store=prefixed("torch", store),
                                rank=layout.process, world_size=layout.processes,
                                timeout=timedelta(seconds=collective_s))
        self._store = prefixed("colabrun", store)
        self._device = device
        self._decisions = 0

    def agree(self, decide: Callable[[], T], kind: type[T] | None = None) -> T:
        self._decisions += 1
        key = f"decision/{self._decisions}"
        if self.layout.is_leader:
            value = decide()
            self._store.set(key, _encode(value))  # type: ignore[arg-type]
            if self._decisions > KEPT_DECISIONS:
                self._store.delete_key(f"decision/{self._decisions - KEPT_DECISIONS}")
            return value
        loaded = json.loads(self._store.get(key))
        return kind(**loaded) if kind is not None else loaded

    def gather(self, value: T) -> list[T] | None:
        out: list[Any] | None = [None] * self.layout.processes if self.layout.is_leader \
            else None
        dist.gather_object(value, out, dst=0)
        return out

    def wrap(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device = self._device
        if device is not None and device.type == "cuda":
            kwargs.setdefault("device_ids", [device])
        return DistributedDataParallel(model, **kwargs)

    def accumulating(self, model: torch.nn.Module | None) -> AbstractContextManager[Any]:
        no_sync = getattr(model, "no_sync", None)
        return no_sync() if callable(no_sync) else nullcontext()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def opened(group: Group) -> Iterator[Group]:
    """``group``, left however training ends."""
    try:
        yield group
    finally:
        group.close()
