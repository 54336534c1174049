"""What a checkpoint holds for the loop to resume from (:func:`save_context`), and
putting it back as the loop reaches the point it was saved at (:class:`Restorer`).

Tracked objects are loaded when they are tracked; the RNG states are restored
last, at the resume point, so a resumed run draws the same numbers from there
on. A mid-epoch checkpoint also holds the RNG state of its epoch's start
(:data:`RNG_EPOCH`), restored when ``run.epochs()`` yields that epoch again, so
draws at the top of an epoch repeat too. Generators the user tracks
(:mod:`colabrun.runner.train.generators`) go the same way: their epoch-start states
ride in :data:`RNG_EPOCH`, and they are loaded again at the resume point. The data
loader's own state (:mod:`colabrun.runner.train.loaders`) is kept under :data:`LOADER`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from colabrun.jobs.errors import HandleError
from colabrun.jobs.handle import Stateful
from colabrun.runner.dist.ranks import PROCESSES
from colabrun.runner.dist.streams import RANKS, RankStreams
from colabrun.runner.save.capture import SaveContext
from colabrun.runner.train.generators import GeneratorState
from colabrun.runner.train.position import EPOCH_START, IN_EPOCH
from colabrun.runner.train.resume import ResumePoint
from colabrun.runner.train.rng import capture_rng

RNG = "rng"  # payload key: the RNG state at the save's program point
RNG_EPOCH = "rng_epoch_start"  # payload key: the RNG state when the current epoch began
GENERATORS = "tracked_generators"  # in RNG_EPOCH: the tracked generators' states
LOADER = "loader"  # payload key: the data loader's own state, if it has one
MICRO_BATCHES = "_colabrun_micro_batches"  # kept with the extras: survives restarts
#: kept with the extras: the most batches between two run.step() calls (an accumulation)
BATCHES_PER_STEP = "_colabrun_batches_per_step"
#: the extras colabrun keeps for itself, not shown in run.extras
OWN_EXTRAS = (MICRO_BATCHES, BATCHES_PER_STEP, PROCESSES)


def capture_epoch_start(tracked: Mapping[str, Stateful],
                        streams: RankStreams | None = None) -> dict[str, Any]:
    """The global RNG states and the tracked generators' states, as an epoch begins;
    with several ranks here, the streams of the others under :data:`RANKS`."""
    captured = {**capture_rng(), GENERATORS: {
        name: obj.state_dict() for name, obj in tracked.items()
        if isinstance(obj, GeneratorState)}}
    if streams is not None and len(streams.hosted) > 1:
        captured[RANKS] = {str(rank): state for rank, state in streams.states().items()
                           if rank != streams.first}
    return captured


def ranks_in(main: Mapping[str, Any], hosted: range) -> dict[int, Mapping[str, Any]]:
    """The streams of ``hosted`` in a saved RNG value: rank 0's is ``main`` itself, the
    others' are under its :data:`RANKS`, or beside it in the payload (see :func:`save_context`).
    """
    others = main.get(RANKS, {})
    missing = [rank for rank in hosted if rank and str(rank) not in others]
    if missing:
        raise HandleError(
            f"the checkpoint keeps the random streams of {len(others) + 1} rank(s), not of "
            f"rank {missing[0]}: it was saved with another distributed.ranks; train another "
            "number of ranks as a new job (another name)")
    return {rank: main if rank == 0 else others[str(rank)] for rank in hosted}


def save_context(where: str, *, extras: Mapping[str, Any], micro_batches: int,
                 rng: Mapping[str, Any], epoch_rng: Mapping[str, Any] | None,
                 metrics: Mapping[str, float] | None = None,
                 batches_per_step: int = 0,
                 loader: Mapping[str, Any] | None = None,
                 rank_rng: Mapping[int, Any] | None = None,
                 rank_epoch_rng: Mapping[int, Any] | None = None) -> SaveContext:
    """What a save at ``where`` holds besides the tracked objects (a pure function).

    Args:
        where: ``in_epoch`` or ``epoch_start``.
        extras: the run's extras (JSON values).
        micro_batches: the pieces each batch is cut into, kept across restarts.
        rng: the RNG states now.
        epoch_rng: the RNG states when the current epoch began (kept mid-epoch only).
        metrics: the newest value of each metric logged so far (finite ones are kept).
        batches_per_step: the most batches between two ``run.step()`` calls so far.
        loader: the data loader's own state, if it has one.
        rank_rng, rank_epoch_rng: with several ranks, the streams of ranks 1 and up, now
            and as the epoch began (by rank).

    Returns:
        The context: the RNG states (and the loader's), and the extras with the
        micro-batch count and the accumulation's length.

    Raises:
        HandleError: ``extras`` holds something JSON cannot.
    """
    try:
        json.dumps(extras)
    except (TypeError, ValueError) as exc:
        raise HandleError(
            f"run.extras must hold JSON values (numbers, strings, lists, dicts): {exc}; "
            "convert tensors with .item() or .tolist() before storing them"
        ) from exc
    state: dict[str, Any] = {RNG: _with_ranks(rng, rank_rng)}
    if where == IN_EPOCH and epoch_rng is not None:
        state[RNG_EPOCH] = _with_ranks(epoch_rng, rank_epoch_rng)
    if loader is not None:
        state[LOADER] = loader
    finite = {k: v for k, v in (metrics or {}).items() if math.isfinite(v)}
    own = {MICRO_BATCHES: micro_batches, BATCHES_PER_STEP: batches_per_step}
    return SaveContext(where=where, state=state, extras={**extras, **own}, metrics=finite)


def _with_ranks(main: Mapping[str, Any], ranks: Mapping[int, Any] | None) -> Mapping[str, Any]:
    others = {str(rank): state for rank, state in (ranks or {}).items() if rank != 0}
    return {**main, RANKS: others} if others else main


class Restorer:
    """Puts a resume point's state back as the loop reaches it, then lets go of it.

    Args:
        point: the checkpoint resumed from; ``None``: a fresh start (nothing to do).
        streams: the random streams of the ranks this process runs.
    """

    def __init__(self, point: ResumePoint | None = None,
                 streams: RankStreams | None = None) -> None:
        self._point = point
        self._fresh = point is None
        self._started = False
        self._streams = streams or RankStreams()

    def start_training(self, seed: int) -> None:
        """The first ``run.epochs()`` or ``run.batches()``: a fresh run reseeds the global
        generators (:func:`~colabrun.runner.train.rng.training_seed`), so what setup drew
        (importing ``sklearn.datasets`` draws from ``random``) does not change the numbers
        training draws; a resumed run gets the checkpoint's states instead."""
        if self._fresh and not self._started:
            self._streams.seed(seed)  # rank 0's: training_seed(seed)
        self._started = True

    def load(self, name: str, obj: Stateful) -> None:
        """Load the saved state of the object tracked as ``name``.

        Raises:
            HandleError: the checkpoint holds no state under that name.
        """
        if self._point is None:
            return
        saved = self._point.payload["tracked"]
        if name not in saved:
            raise HandleError(
                f"run.track({name}=...): checkpoint {self._point.name} holds no state "
                f"for {name!r} (it holds {sorted(saved)}); track the same objects under "
                "the same names in every run"
            )
        obj.load_state_dict(saved[name])

    def at_epoch_start(self, tracked: Mapping[str, Stateful]) -> None:
        """An epoch starts: the RNG as the saved run had it when this epoch began.

        Raises:
            HandleError: the checkpoint holds state for an object not tracked.
        """
        point = self._point
        if point is not None and point.where == IN_EPOCH and RNG_EPOCH in point.payload:
            epoch_rng = point.payload[RNG_EPOCH]
            self._streams.load(ranks_in(epoch_rng, self._streams.hosted))
            _load_generators(tracked, epoch_rng.get(GENERATORS, {}))
        self.at(EPOCH_START, tracked)

    def at(self, where: str, tracked: Mapping[str, Stateful]) -> None:
        """The loop reached a ``where`` boundary: if the checkpoint was saved at one,
        restore its RNG states (the tracked generators' too); the run is then like any other.

        Raises:
            HandleError: the checkpoint holds state for an object not tracked.
        """
        point = self._point
        if point is None or point.where != where or RNG not in point.payload:
            return
        self.check_all_restored(tracked)
        self._streams.load(ranks_in(point.payload[RNG], self._streams.hosted))
        _load_generators(tracked, point.payload["tracked"])  # the epoch's start moved them
        self._point = None  # resumed: from here on the run is like any other

    def check_all_restored(self, tracked: Mapping[str, Stateful]) -> None:
        """Refuse to go on while the checkpoint holds state nothing tracked took back.

        Raises:
            HandleError: naming the objects to track.
        """
        if self._point is None:
            return
        missing = sorted(set(self._point.payload["tracked"]) - set(tracked))
        if missing:
            raise HandleError(
                f"checkpoint {self._point.name} holds state for {missing}, which this run did "
                "not track; call run.track(...) with the same names before the first batch"
            )


def _load_generators(tracked: Mapping[str, Stateful], states: Mapping[str, Any]) -> None:
    """Load the tracked generators that ``states`` holds a state for."""
    for name, obj in tracked.items():
        if isinstance(obj, GeneratorState) and name in states:
            obj.load_state_dict(states[name])
