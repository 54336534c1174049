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
* Python: ``getstate()``/``setstate()`` build and read a tuple of 625 ints (~11 µs
  together); here the index and words of the global generator's Mersenne Twister
  (CPython's ``_random.Random``) are copied as one block from the object itself (under
  1 µs), the layout checked against ``getstate()`` once per generator (else the slow
  pair is used), and ``gauss_next``, its Gaussian cache, beside them; ``seed(int)`` (~4 µs);
* NumPy: ``get_state()``/``set_state()`` copy the 624 words one by one (~100 µs
  together); here the words are copied as one block through the bit generator's
  documented ``ctypes.state_address`` (~1 µs), the layout checked against
  ``state`` once per bit generator (else the slow pair is used). The legacy
  Gaussian cache, which only ``set_state`` can fill, is probed by one draw that
  takes the cached value if there is one; only then does the restore call
  ``set_state``.

Both blocks are read and written through a ``ctypes`` array over them (``.raw``): one
copy, the GIL held, where ``ctypes.string_at``/``memmove`` cost several times more in the
running loop (between two training steps, 15 µs against 4 µs per batch for NumPy's).
"""

from __future__ import annotations

import ctypes
import random
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

#: numpy's ``mt19937_state``: ``uint32_t key[624]; int pos``
_MT_WORDS = 624
_MT_STATE_BYTES = _MT_WORDS * 4 + 4
#: CPython's ``RandomObject``, after the object's header: ``int index; uint32_t state[624]``
_PY_STATE_BYTES = 4 + _MT_WORDS * 4
#: the two blocks, read and written in place
_MT_BLOCK = ctypes.c_char * _MT_STATE_BYTES
_PY_BLOCK = ctypes.c_char * _PY_STATE_BYTES


# NamedTuples, not frozen dataclasses: one of each is built per batch, and a frozen
# dataclass sets each field through object.__setattr__ (three times the cost, measured).


class Seeds(NamedTuple):
    """One seed per global stream."""

    torch: int
    numpy: int
    python: int


class SavedStreams(NamedTuple):
    """What :func:`save_streams` took; give it to :func:`restore_streams`."""

    torch: torch.Tensor
    python: Any  # the index and words as bytes, or getstate()'s tuple where not at hand
    numpy: Any  # the MT19937 words as bytes, or get_state()'s dict where not at hand
    address: int | None = None  # where the words were read, when they were
    gauss: float | None = None  # NumPy's cached Gaussian, taken by the probe draw
    #: the generator and its index and words in place, where ``python`` was read from them
    python_at: tuple[Any, Any] | None = None
    python_gauss: float | None = None  # the generator's ``gauss_next``, read beside them


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
    python_at = python_words()
    if python_at is None:
        python, python_gauss = random.getstate(), None
    else:
        python, python_gauss = python_at[1].raw, python_at[0].gauss_next
    address = (locate or mt_state_address)()
    if address is None:
        return SavedStreams(torch.default_generator.get_state(), python,
                            np.random.get_state(legacy=False),  # any bit generator
                            python_at=python_at, python_gauss=python_gauss)
    words = _MT_BLOCK.from_address(address)
    before = words.raw
    # The legacy Gaussian cache cannot be read, only drawn: a draw that leaves the words
    # as they were returned the cached value; one that moved them is undone on restore.
    probe = float(np.random.standard_normal())
    gauss = probe if words.raw == before else None
    return SavedStreams(torch.default_generator.get_state(), python, before, address, gauss,
                        python_at, python_gauss)


def restore_streams(saved: SavedStreams) -> None:
    """Put the three global streams back as :func:`save_streams` found them."""
    torch.default_generator.set_state(saved.torch)
    if saved.python_at is None:
        random.setstate(saved.python)
    else:  # as setstate() does: the index and words, then the Gaussian cache
        generator, words = saved.python_at
        words.raw = saved.python
        generator.gauss_next = saved.python_gauss
    if saved.address is None:
        np.random.set_state(saved.numpy)
    elif saved.gauss is not None:  # only set_state fills the cache
        key = np.frombuffer(saved.numpy, dtype=np.uint32, count=_MT_WORDS)
        pos = int.from_bytes(saved.numpy[-4:], sys.byteorder, signed=True)
        np.random.set_state(("MT19937", key, pos, 1, saved.gauss))
    else:
        np.random.seed(0)  # empties the Gaussian cache; the words are overwritten next
        _MT_BLOCK.from_address(saved.address).raw = saved.numpy


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


#: [the generator checked, ``(generator, its index and words in place)`` or None]
_checked_python: list[Any] = [None, None]


def python_words() -> tuple[Any, Any] | None:
    """The generator behind the global ``random`` functions, with its index and words in
    place (a ctypes array over them), if it is a plain ``random.Random`` laid out as
    CPython's ``RandomObject`` (``_PY_STATE_BYTES`` after the object's header); ``None``
    otherwise (another interpreter, another generator, a layout not as expected):
    :func:`save_streams` then uses ``getstate()``."""
    generator = getattr(random.getstate, "__self__", None)
    if _checked_python[0] is not generator:
        _checked_python[0], _checked_python[1] = generator, _python_layout_checked(generator)
    return _checked_python[1]  # type: ignore[no-any-return]


def _python_layout_checked(generator: Any) -> tuple[Any, Any] | None:
    """``generator`` and its index and words in place, if the module's ``getstate`` and
    ``setstate`` are its own, plain ``random.Random``'s, and the bytes after its header
    match what ``getstate()`` says."""
    if (sys.implementation.name != "cpython"
            or not getattr(sys, "_is_gil_enabled", lambda: True)()  # a copy is not atomic
            or type(generator) is not random.Random
            or not all(getattr(getattr(random, name), "__self__", None) is generator
                       and getattr(getattr(random, name), "__func__", None)
                       is getattr(random.Random, name) for name in ("getstate", "setstate"))
            or random.Random.__basicsize__ < object.__basicsize__ + _PY_STATE_BYTES):
        return None
    words = _PY_BLOCK.from_address(id(generator) + object.__basicsize__)
    version, internal, _ = generator.getstate()
    raw = words.raw
    index = int.from_bytes(raw[:4], sys.byteorder, signed=True)
    key = np.frombuffer(raw, dtype=np.uint32, count=_MT_WORDS, offset=4)
    if version != 3 or len(internal) != _MT_WORDS + 1 or index != internal[-1] or \
            key.tolist() != list(internal[:-1]):
        return None
    return generator, words
