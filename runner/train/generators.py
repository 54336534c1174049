"""Random generators the user owns, tracked like any other object (``run.track(g=g)``).

A ``torch.Generator``, a NumPy ``Generator`` or ``RandomState`` and a ``random.Random``
have no ``state_dict()``; :func:`as_stateful` wraps each in a :class:`GeneratorState`
that has. Their states are saved in a form ``torch.load(weights_only=True)`` reads:
tensors, ints, strings, tuples and dicts (a NumPy array becomes a tagged tensor). The
loop restores them as it restores the global generators
(:mod:`colabrun.runner.train.restore`): the state at the save point, and for draws at
the top of an epoch the state the epoch began with.
"""

from __future__ import annotations

import pickle
import random
from typing import Any, ClassVar

import numpy as np
import torch

from colabrun.jobs.errors import HandleError
from colabrun.jobs.handle import Stateful
from colabrun.runner.train.rng import decode_python_state, encode_python_state

_ARRAY = "ndarray"  # the tag of an encoded NumPy array: (_ARRAY, dtype, tensor)


class GeneratorState:
    """A generator seen as a tracked object: ``state_dict()``/``load_state_dict()``.

    Args:
        generator: the user's generator, changed in place on load.
    """

    #: the kind's name, saved with the state (and named in messages)
    kind: ClassVar[str] = ""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, ``weights_only``-loadable."""
        return {"kind": self.kind, "state": self._get()}

    def load_state_dict(self, state_dict: Any, /) -> None:
        """Put the generator back in a state :meth:`state_dict` gave.

        Raises:
            HandleError: the state is of another kind of generator.
        """
        if state_dict.get("kind") != self.kind:
            raise HandleError(
                f"run.track(): the checkpoint holds a {state_dict.get('kind')} under this "
                f"name, and this run tracks a {self.kind}; track the same objects under the "
                "same names in every run")
        self._set(state_dict["state"])

    def fingerprint(self) -> bytes:
        """The state as bytes, to tell whether the generator was drawn from."""
        return pickle.dumps(self._raw())

    def _get(self) -> Any:
        raise NotImplementedError

    def _set(self, state: Any) -> None:
        raise NotImplementedError

    def _raw(self) -> Any:
        raise NotImplementedError


class TorchGeneratorState(GeneratorState):
    """A ``torch.Generator`` (any device: its state is a CPU byte tensor)."""

    kind = "torch.Generator"

    def _get(self) -> Any:
        return self.generator.get_state()

    def _set(self, state: Any) -> None:
        self.generator.set_state(state)

    def _raw(self) -> Any:
        return self.generator.get_state().numpy().tobytes()


class NumpyGeneratorState(GeneratorState):
    """A NumPy ``Generator`` (``np.random.default_rng()``), any bit generator."""

    kind = "numpy.random.Generator"

    def _get(self) -> Any:
        return encode(self.generator.bit_generator.state)

    def _set(self, state: Any) -> None:
        self.generator.bit_generator.state = decode(state)

    def _raw(self) -> Any:
        return self.generator.bit_generator.state


class RandomStateState(GeneratorState):
    """A NumPy ``RandomState`` (the legacy API)."""

    kind = "numpy.random.RandomState"

    def _get(self) -> Any:
        return encode(self._raw())

    def _set(self, state: Any) -> None:
        self.generator.set_state(decode(state))

    def _raw(self) -> Any:
        return self.generator.get_state(legacy=False)


class PythonRandomState(GeneratorState):
    """A ``random.Random`` (not ``SystemRandom``, which has no state)."""

    kind = "random.Random"

    def _get(self) -> Any:
        return encode_python_state(self.generator.getstate())  # as the global one's

    def _set(self, state: Any) -> None:
        self.generator.setstate(decode_python_state(state))

    def _raw(self) -> Any:
        return self.generator.getstate()


_ADAPTERS: tuple[tuple[type, type[GeneratorState]], ...] = (
    (torch.Generator, TorchGeneratorState),
    (np.random.Generator, NumpyGeneratorState),
    (np.random.RandomState, RandomStateState),
    (random.Random, PythonRandomState),
)


#: the kinds of generator :func:`as_stateful` adapts
GENERATOR_TYPES: tuple[type, ...] = tuple(kind for kind, _ in _ADAPTERS)


def is_generator(obj: Any) -> bool:
    """Whether ``obj`` is a generator with a state to keep (``SystemRandom`` has none)."""
    return isinstance(obj, GENERATOR_TYPES) and not isinstance(obj, random.SystemRandom)


def as_stateful(obj: Any, name: str) -> GeneratorState | None:
    """The adapter that tracks ``obj``, if it is a generator; ``None`` for anything else.

    Raises:
        HandleError: a ``random.SystemRandom``, whose numbers cannot be drawn again.
    """
    if isinstance(obj, random.SystemRandom):
        raise HandleError(
            f"run.track({name}=...): a SystemRandom draws from the operating system and has "
            "no state to save; use random.Random(seed) for numbers a resume repeats")
    for kind, adapter in _ADAPTERS:
        if isinstance(obj, kind):
            return adapter(obj)
    return None


def as_tracked(name: str, obj: Any, *, ranks: int = 1) -> Stateful:
    """What ``run.track(name=obj)`` keeps: ``obj``, or its adapter if it is a generator.

    Args:
        name: the name it is tracked under.
        obj: what the user tracks.
        ranks: the job's ranks (a generator of the user's is refused with several: each
            rank would need its own, which one checkpoint cannot tell apart yet).

    Raises:
        HandleError: ``obj`` has no ``state_dict``/``load_state_dict`` and is no generator,
            or it is a generator and the job has several ranks.
    """
    adapter = as_stateful(obj, name)
    if adapter is not None and ranks > 1:
        raise HandleError(
            f"run.track({name}=...): a job of {ranks} ranks cannot track a "
            f"{type(obj).__name__} yet; draw from the global generators (torch, NumPy, "
            "random), which colabrun keeps for each rank (docs/concepts.md#several-processes)")
    tracked = adapter or obj
    if not isinstance(tracked, Stateful):
        raise HandleError(
            f"run.track({name}=...): a {type(obj).__name__} has no state_dict() and "
            "load_state_dict(); track modules, optimizers, schedulers, random generators "
            "or such objects")
    return tracked


def is_global(obj: Any) -> bool:
    """Whether ``obj`` is one of the global generators colabrun saves anyway."""
    if obj is torch.default_generator or obj is np.random.mtrand._rand:
        return True
    if obj is getattr(random, "_inst", None):
        return True
    return any(obj is g for g in torch.cuda.default_generators)


def encode(value: Any) -> Any:
    """A NumPy generator state as ``weights_only``-loadable values (arrays as tensors)."""
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        kept = value.view(np.int64) if value.dtype == np.uint64 else value.astype(np.int64)
        return (_ARRAY, value.dtype.str, torch.from_numpy(np.ascontiguousarray(kept)))
    if isinstance(value, np.integer):
        return int(value)
    return value


def decode(value: Any) -> Any:
    """The NumPy state :func:`encode` was given."""
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, tuple) and len(value) == 3 and value[0] == _ARRAY:
        _, dtype, tensor = value
        array = tensor.numpy()
        wanted = np.dtype(dtype)
        return array.view(wanted) if wanted == np.uint64 else array.astype(wanted)
    return value
