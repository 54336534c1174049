"""Taking a snapshot of tracked state: the only part of a save that blocks training.

Two ways, chosen per save by :func:`choose_mode`:

* **copy** into reusable host buffers (:class:`HostBuffers`). The buffers are
  allocated once and reused by every later save, so a save costs one ``copy_``
  per tensor and no page faults; for CUDA tensors they are pinned and the copies
  asynchronous (ordered on the current stream before any later update), so the
  loop waits only to enqueue them. On Linux, buffers for CPU tensors are shared
  memory, which a long-lived writer process reads (:mod:`colabrun.runner.save.writer`). Host
  memory holds at most one snapshot.
* **fork**: no copy at all. The background writer is a forked child that reads
  the live tensors from its copy-on-write view of memory (:mod:`colabrun.runner.save.writer`).
  Only for CPU tensors, and in ``auto`` mode only where a copy would cost more than a
  fork: a big state that training mostly leaves as it is.
"""

from __future__ import annotations

import copy
import mmap
from collections.abc import Callable, Mapping
from typing import Any

import torch

from colabrun.jobs.handle import Stateful

AUTO = "auto"
COPY = "copy"
FORK = "fork"

#: in ``auto`` mode, only states at least this big may be written by a forked child: from
#: here a fork stalls the loop less than a copy
#: (benchmarks/README.md#measurements-behind-the-constants)
FORK_MIN_BYTES = 128 * 2**20
#: in ``auto`` mode, a big state is forked only if training rewrites at most this share of
#: it. Each page training writes while a forked child lives is copied by the kernel on a
#: fault: a copy of the same bytes plus a fault per 4 KiB, paid by the steps after the
#: save. A state training rewrites whole (any dense optimizer: Adam, SGD with momentum)
#: costs a fork more than a copy; a mostly frozen one (a fine-tuned backbone) costs it
#: less, and is not held twice in memory for the session.
FORK_MAX_REWRITTEN_SHARE = 0.5


def choose_mode(requested: str, *, nbytes: int, on_cuda: bool, can_fork: bool,
                frozen_bytes: int = 0) -> str:
    """``copy`` or ``fork`` for one save (a pure decision).

    CUDA tensors are always copied (a forked child cannot read device memory);
    ``fork`` needs a platform that forks safely; ``auto`` forks only big states that
    training mostly leaves as they are.

    Args:
        requested: ``auto``, ``copy`` or ``fork`` (the spec's ``checkpoint.snapshot``).
        nbytes: bytes of tensor data in the state.
        on_cuda: whether any of it is on a CUDA device.
        can_fork: whether this platform forks a writer safely.
        frozen_bytes: bytes of it training does not rewrite (:func:`frozen_bytes`).

    Returns:
        ``copy`` or ``fork``.
    """
    if on_cuda or not can_fork or requested == COPY:
        return COPY
    if requested == FORK:
        return FORK
    rewritten = nbytes - min(frozen_bytes, nbytes)
    if nbytes >= FORK_MIN_BYTES and rewritten <= FORK_MAX_REWRITTEN_SHARE * nbytes:
        return FORK
    return COPY


Path_ = tuple[Any, ...]
#: leaves a snapshot keeps as they are (immutable): the types, not their subclasses
_ATOMS = frozenset({type(None), bool, int, float, str})


class HostBuffers:
    """Reusable host buffers, one per tensor position in the tracked state.

    Args:
        shared: put the buffers of CPU tensors in shared anonymous memory
            (``mmap``), so that a writer process forked after their allocation
            reads what later snapshots copy into them. :attr:`layout` changes
            whenever a buffer is allocated: a writer forked before does not see it.
    """

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._buffers: dict[Path_, torch.Tensor] = {}
        self._keys: dict[int, Path_] = {}  # id of a shared buffer -> its position
        self._sources: list[torch.Tensor] = []  # the live tensors the last snapshot read
        self.layout = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def key_of(self, tensor: torch.Tensor) -> Path_ | None:
        """The position of ``tensor`` if it is one of the shared buffers, else ``None``."""
        key = self._keys.get(id(tensor))
        return key if key is not None and self._buffers.get(key) is tensor else None

    def buffer(self, key: Path_) -> torch.Tensor:
        """The buffer at position ``key``."""
        return self._buffers[key]

    def take_sources(self) -> list[torch.Tensor]:
        """The live CPU tensors the last snapshot copied into shared buffers, once (the
        list is cleared): a writer process forked now frees its view of them
        (:func:`~colabrun.runner.save.child.release_storages`)."""
        sources, self._sources = self._sources, []
        return sources

    def snapshot(self, states: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], Callable[[], None] | None]:
        """Copy ``{name: state_dict}`` into the buffers.

        Returns:
            The snapshot, and a function that waits until its asynchronous
            device copies landed (``None`` when every copy was synchronous).
        """
        self._sources = []
        on_cuda = [False]
        with torch.no_grad():  # copies of parameters stay out of autograd's graph
            state = {name: self._copy(value, (name,), on_cuda) for name, value in states.items()}
        if not on_cuda[0]:
            return state, None
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return state, event.synchronize

    def _copy(self, value: Any, path: Path_, on_cuda: list[bool]) -> Any:
        # the hot part of a save's stall: atoms (most leaves) are kept without a call
        cls = type(value)
        if cls in _ATOMS:
            return value  # immutable: nothing to copy
        if isinstance(value, torch.Tensor):
            return self._copy_tensor(value, path, on_cuda)
        if cls is dict or isinstance(value, Mapping):
            return {key: item if type(item) in _ATOMS else self._copy(item, (*path, key), on_cuda)
                    for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            items = [item if type(item) in _ATOMS else self._copy(item, (*path, i), on_cuda)
                     for i, item in enumerate(value)]
            if cls is list:
                return items
            return cls(*items) if hasattr(value, "_fields") else cls(items)
        return copy.deepcopy(value)

    def _copy_tensor(self, tensor: torch.Tensor, path: Path_, on_cuda: list[bool]
                     ) -> torch.Tensor:
        if tensor.layout != torch.strided or tensor.is_quantized:
            return tensor.to("cpu", copy=True)  # rare layouts: a plain copy
        buffer = self._buffers.get(path)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = self._allocate(tensor, path)
        cuda = tensor.is_cuda
        buffer.copy_(tensor, non_blocking=cuda)
        if self.shared and not cuda:
            self._sources.append(tensor)
        on_cuda[0] = on_cuda[0] or cuda
        return buffer

    def _allocate(self, tensor: torch.Tensor, path: Path_) -> torch.Tensor:
        # contiguous whatever the source's strides (an expanded tensor's overlap
        # cannot be written into): the values are what a checkpoint keeps
        numel = tensor.numel()
        replaced = self._buffers.get(path)
        if replaced is not None:
            self._keys.pop(id(replaced), None)
        if self.shared and not tensor.is_cuda and numel > 0:
            region = mmap.mmap(-1, numel * tensor.element_size())  # MAP_SHARED|MAP_ANONYMOUS
            buffer = torch.frombuffer(region, dtype=tensor.dtype, count=numel).view(tensor.shape)
            self._keys[id(buffer)] = path
            self.layout += 1
        else:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu",
                                 pin_memory=tensor.is_cuda)
        self._buffers[path] = buffer
        return buffer


def frozen_bytes(tracked: Mapping[str, Stateful]) -> int:
    """Bytes of the tracked modules' parameters that need no gradient, which training
    leaves as they are (each counted once); the rest of a state (trainable parameters,
    optimizer state, buffers) is taken as rewritten at every step."""
    frozen: dict[int, int] = {}
    for obj in tracked.values():
        if isinstance(obj, torch.nn.Module):
            for param in obj.parameters():
                if not param.requires_grad:
                    frozen[id(param)] = param.numel() * param.element_size()
    return sum(frozen.values())


def live_state(tracked: Mapping[str, Stateful]) -> dict[str, Any]:
    """``{name: state_dict()}`` without copying (for a forked writer's view)."""
    return {name: obj.state_dict() for name, obj in tracked.items()}


def parameters_with_gradients(tracked: Mapping[str, Stateful]) -> list[torch.Tensor]:
    """The parameters of the tracked modules and optimizers that hold a gradient."""
    params: dict[int, torch.Tensor] = {}
    for obj in tracked.values():
        if isinstance(obj, torch.nn.Module):
            candidates: Any = obj.parameters()
        elif isinstance(obj, torch.optim.Optimizer):
            candidates = (p for group in obj.param_groups for p in group["params"])
        else:
            continue
        for param in candidates:
            if param.grad is not None:
                params[id(param)] = param
    return list(params.values())


def tensor_stats(value: Any) -> tuple[int, bool]:
    """Bytes of tensor data in ``value``, and whether any of it is on a CUDA device."""
    nbytes, cuda = 0, False
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) in _ATOMS:
            continue
        if isinstance(item, torch.Tensor):
            nbytes += item.numel() * item.element_size()
            cuda = cuda or item.is_cuda
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return nbytes, cuda
