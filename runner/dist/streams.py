"""The random streams of the ranks a process runs: each rank draws from its own.

A process running one rank draws from the global generators (Python's, NumPy's, torch's),
seeded for that rank. A process running several virtual ranks keeps the streams of all
but its first aside, and swaps each in while its rank's piece of the batch trains
(:meth:`RankStreams.of`, in ``run.split``): the dropout masks of rank 1 are the same
whether rank 1 runs in a process of its own or after rank 0 in one process. Outside
``run.split`` the global generators hold the process's first rank's stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from colabrun.runner.train.rng import capture_rng, restore_rng, seed_everything, training_seed

_GOLDEN = 0x9E3779B97F4A7C15
#: where a saved RNG value keeps the streams of ranks other than its own, by rank (as text)
RANKS = "ranks"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s stream as a fresh run's training starts. Pure: rank 0's
    is :func:`~colabrun.runner.train.rng.training_seed`, as for a job of one rank."""
    return (training_seed(seed) + rank * _GOLDEN) % 2**63


class RankStreams:
    """The streams of the ranks ``hosted`` (consecutive; the first's are the globals).

    Args:
        hosted: the ranks this process runs.
        own_device: a job of several ranks: a rank's CUDA stream is that of the device it
            trains on (``cuda:N`` in process N, ``cuda:0`` for virtual ranks), kept as one
            state and put back on this process's device, whichever index it has; else every
            device's, by index (a job of one rank, as before).
    """

    def __init__(self, hosted: range = range(1), *, own_device: bool = False) -> None:
        self.hosted = hosted
        self._own_device = own_device
        self._aside: dict[int, dict[str, Any]] = {}

    @property
    def first(self) -> int:
        """The rank whose stream the global generators hold outside ``run.split``."""
        return self.hosted[0]

    def seed(self, seed: int) -> None:
        """A fresh run's training starts: each rank's stream from :func:`rank_seed`."""
        for rank in reversed(self.hosted):
            seed_everything(rank_seed(seed, rank))
            if rank != self.first:
                self._aside[rank] = self._capture()

    def states(self) -> dict[int, dict[str, Any]]:
        """Every hosted rank's stream now (outside ``run.split``)."""
        return {self.first: self._capture(), **self._aside}

    def load(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Put back the hosted ranks' streams from ``states`` (rank -> state)."""
        self._restore(dict(states[self.first]))
        self._aside = {rank: dict(states[rank]) for rank in self.hosted[1:]}

    @contextmanager
    def of(self, rank: int) -> Iterator[None]:
        """While the block runs, the global generators draw rank ``rank``'s stream."""
        if rank == self.first:
            yield
            return
        home = self._capture()
        self._restore(self._aside[rank])
        try:
            yield
        finally:
            self._aside[rank] = self._capture()
            self._restore(home)

    def _capture(self) -> dict[str, Any]:
        state = capture_rng()
        if self._own_device and "cuda" in state:
            state["cuda"] = [torch.cuda.get_rng_state()]  # the current device's alone
        return state

    def _restore(self, state: Mapping[str, Any]) -> None:
        if not self._own_device or "cuda" not in state:
            restore_rng(dict(state))
            return
        restore_rng({key: value for key, value in state.items() if key != "cuda"})
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"][0])  # onto this process's device

