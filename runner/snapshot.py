"""Taking a snapshot of tracked state: a deep copy in host memory.

This copy is the only part of a save that blocks training; the write that
follows works from the copy, so training may go on changing the originals.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from jobs.handle import Stateful


def copy_to_host(value: Any) -> Any:
    """A deep copy of ``value`` with every tensor copied to CPU memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: copy_to_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(copy_to_host(item) for item in value)
    return copy.deepcopy(value)


def snapshot_tracked(tracked: Mapping[str, Stateful]) -> dict[str, Any]:
    """``{name: copy of state_dict()}`` for every tracked object."""
    return {name: copy_to_host(obj.state_dict()) for name, obj in tracked.items()}


def payload_bytes(value: Any) -> int:
    """Bytes of tensor data in ``value`` (to size a write's timeout)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return 0
