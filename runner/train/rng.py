"""Capturing and restoring every RNG a training loop may draw from.

Python's ``random``, NumPy's legacy global generator, torch's CPU generator
and every CUDA device's generator. The captured form holds only tensors,
ints, floats, strings and tuples, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def training_seed(seed: int) -> int:
    """The seed a fresh run's training draws from, as its first epoch starts: set up
    and trained alike whatever setup drew (importing ``sklearn.datasets`` draws from
    Python's ``random``), and distinct from ``seed``, whose numbers set up the model."""
    return (seed * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % 2**63


def capture_rng() -> dict[str, Any]:
    """The state of every generator, as a ``weights_only``-loadable value."""
    numpy_state: Any = np.random.get_state(legacy=True)
    kind, key, pos, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "python": encode_python_state(random.getstate()),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss),
                  float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back as :func:`capture_rng` found it."""
    random.setstate(decode_python_state(state["python"]))
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A fresh runtime may have fewer GPUs (docs/colab.md#limits): restore what exists.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def encode_python_state(state: tuple[Any, ...]) -> tuple[Any, ...]:
    """A ``random.Random.getstate()`` as a ``weights_only``-loadable value: the 625 words
    as one tensor, pickled as one object, not 625 (saves are hot)."""
    version, internal, gauss_next = state
    return (version, torch.from_numpy(np.array(internal, dtype=np.int64)), gauss_next)


def decode_python_state(value: Any) -> tuple[Any, ...]:
    """What :func:`encode_python_state` made, for ``random.Random.setstate()``."""
    version, internal, gauss = value
    if isinstance(internal, torch.Tensor):
        return (version, tuple(internal.tolist()), gauss)
    return (version, tuple(internal), gauss)  # a checkpoint from before the tensor form
