"""The three global random streams a ``Dataset`` draws from, seeded and put back cheaply.

A batch loaded in the training process (``num_workers=0``) reseeds Python's
``random``, NumPy's legacy global generator and torch's default CPU generator,
then puts back what the training loop had in them: dropout and the like draw
from these, and checkpoints save them. This runs once per batch, so it is the
cheapest way measured (2-core CPU, ``timeit``, best of 5; the ``reseed`` benchmark
case measures the whole):

* torch: ``default_generator.get_state()``/``set_state()`` (~2 µs), and
  ``default_generator.manual_seed`` (~1 µs), never ``torch.manual_seed``, which
  also seeds every other device (over 100 µs, even on a CPU-only build);
* Python: ``getstate()``/``setstate()`` (~11 µs), ``seed(int)`` (~5 µs);
* NumPy: ``get_state()``/``set_state()`` copy the 624 words one by one (~100 µs
  together); here the words are copied as one block through the bit generator's
  documented ``ctypes.state_address`` (~1 µs), the layout checked against
  ``state`` once per bit generator (else the slow pair is used). The legacy
  Gaussian cache, which only ``set_state`` can fill, is probed by one draw that
  takes the cached value if there is one; only then does the restore call
  ``set_state``.
"""

from __future__ import annotations

import ctypes
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: numpy's ``mt19937_state``: ``uint32_t key[624]; int pos``
_MT_WORDS = 624
_MT_STATE_BYTES = _MT_WORDS * 4 + 4


@dataclass(frozen=True)
class Seeds:
    """One seed per global stream."""

    torch: int
    numpy: int
    python: int


@dataclass(frozen=True)
class SavedStreams:
    """What :func:`save_streams` took; give it to :func:`restore_streams`."""

    torch: torch.Tensor
    python: tuple[Any, ...]
    numpy: Any  # the MT19937 words as bytes, or get_state()'s dict where not at hand
    address: int | None = None  # where the words were read, when they were
    gauss: float | None = None  # NumPy's cached Gaussian, taken by the probe draw


def seed_streams(seeds: Seeds) -> None:
    """Seed the three global streams (NumPy's Gaussian cache emptied, as ``seed`` does)."""
    torch.default_generator.manual_seed(seeds.torch)
    np.random.seed(seeds.numpy)
    random.seed(seeds.python)


def save_streams(*, locate: Callable[[], int | None] | None = None) -> SavedStreams:
    """The three global streams' states, to put back with :func:`restore_streams`.

    Args:
        locate: where NumPy's global MT19937 words are, or ``None`` to take them with
            ``get_state()``; by default :func:`mt_state_address`.
    """
    address = (locate or mt_state_address)()
    if address is None:
        return SavedStreams(torch.default_generator.get_state(), random.getstate(),
                            np.random.get_state(legacy=False))  # any bit generator
    before = ctypes.string_at(address, _MT_STATE_BYTES)
    # The legacy Gaussian cache cannot be read, only drawn: a draw that leaves the words
    # as they were returned the cached value; one that moved them is undone on restore.
    probe = float(np.random.standard_normal())
    gauss = probe if ctypes.string_at(address, _MT_STATE_BYTES) == before else None
    return SavedStreams(torch.default_generator.get_state(), random.getstate(), before,
                        address, gauss)


def restore_streams(saved: SavedStreams) -> None:
    """Put the three global streams back as :func:`save_streams` found them."""
    torch.default_generator.set_state(saved.torch)
    random.setstate(saved.python)
    if saved.address is None:
        np.random.set_state(saved.numpy)
    elif saved.gauss is not None:  # only set_state fills the cache
        key = np.frombuffer(saved.numpy, dtype=np.uint32, count=_MT_WORDS)
        pos = int.from_bytes(saved.numpy[-4:], sys.byteorder, signed=True)
        np.random.set_state(("MT19937", key, pos, 1, saved.gauss))
    else:
        np.random.seed(0)  # empties the Gaussian cache; the words are overwritten next
        ctypes.memmove(saved.address, saved.numpy, _MT_STATE_BYTES)


_checked: list[Any] = [None, None]  # [the bit generator checked, its state's address or None]


def mt_state_address() -> int | None:
    """Where NumPy's global MT19937 keeps its words, if laid out as ``_MT_STATE_BYTES``
    says; ``None`` for another bit generator (``np.random.set_bit_generator``) or layout."""
    bit_generator = np.random.mtrand._rand._bit_generator
    if _checked[0] is not bit_generator:
        _checked[0], _checked[1] = bit_generator, _layout_checked(bit_generator)
    return _checked[1]  # type: ignore[no-any-return]


def _layout_checked(bit_generator: Any) -> int | None:
    """The address of ``bit_generator``'s words, if it is an MT19937 laid out as expected."""
    if type(bit_generator).__name__ != "MT19937":
        return None
    address = int(bit_generator.ctypes.state_address)
    state = bit_generator.state["state"]
    raw = ctypes.string_at(address, _MT_STATE_BYTES)
    words = np.frombuffer(raw, dtype=np.uint32, count=_MT_WORDS)
    pos = int.from_bytes(raw[-4:], sys.byteorder, signed=True)
    if not np.array_equal(words, state["key"]) or pos != int(state["pos"]):
        return None
    return address
