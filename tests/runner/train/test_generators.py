"""Tier 1: the user's own generators as tracked objects, put back where the loop resumes,
and the ones nobody tracks, found in the loop's frames."""

from __future__ import annotations

import io
import random
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.train import exactness
from colabrun.runner.train.exactness import InexactResume
from colabrun.runner.train.generators import as_stateful, as_tracked, is_generator, is_global
from colabrun.runner.train.position import IN_EPOCH
from colabrun.runner.train.restore import RNG, RNG_EPOCH, Restorer, capture_epoch_start
from colabrun.runner.train.resume import ResumePoint
from colabrun.runner.train.rng import capture_rng
from colabrun.runner.train.untracked import GeneratorWatch

#: each kind: a factory from a seed, and one draw
KINDS: dict[str, tuple[Callable[[int], Any], Callable[[Any], float]]] = {
    "torch": (lambda s: torch.Generator().manual_seed(s),
              lambda g: float(torch.rand(1, generator=g))),
    "numpy-pcg64": (np.random.default_rng, lambda g: float(g.standard_normal())),
    "numpy-philox": (lambda s: np.random.Generator(np.random.Philox(s)),
                     lambda g: float(g.random())),
    "numpy-mt19937": (lambda s: np.random.Generator(np.random.MT19937(s)),
                      lambda g: float(g.random())),
    "randomstate": (np.random.RandomState, lambda g: float(g.randn())),
    "python": (random.Random, lambda g: g.gauss(0.0, 1.0)),
}


def weights_only_copy(value: Any) -> Any:
    """``value`` through torch.save and torch.load(weights_only=True), as a checkpoint."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_saved_weights_only_and_draws_the_same_after_loading(kind: str) -> None:
    make, draw = KINDS[kind]
    generator = make(1)
    draw(generator)
    draw(generator)  # a gauss pair half used, a buffer part read: state beyond the seed
    saved = weights_only_copy(as_tracked("g", generator).state_dict())
    expected = [draw(generator) for _ in range(5)]
    other = make(99)
    as_tracked("g", other).load_state_dict(saved)
    assert [draw(other) for _ in range(5)] == expected


def test_a_state_of_another_kind_is_refused_with_the_name_to_fix() -> None:
    saved = as_tracked("g", random.Random(1)).state_dict()
    with pytest.raises(HandleError, match=r"holds a random.Random.*tracks a torch.Generator"):
        as_tracked("g", torch.Generator()).load_state_dict(saved)


def test_a_system_random_has_no_state_to_track() -> None:
    with pytest.raises(HandleError, match="SystemRandom.*random.Random"):
        as_stateful(random.SystemRandom(), "g")
    assert not is_generator(random.SystemRandom())


def test_the_global_generators_are_not_the_users() -> None:
    assert is_global(torch.default_generator) and is_global(np.random.mtrand._rand)
    assert is_global(random._inst)  # type: ignore[attr-defined]
    assert not is_global(torch.Generator()) and not is_global(random.Random())


def test_the_epochs_start_and_the_save_point_come_back_where_the_loop_reaches_them() -> None:
    """Draws at the top of the epoch repeat, then the batch body goes on from the save."""
    generator = torch.Generator().manual_seed(3)
    tracked = {"g": as_tracked("g", generator)}
    at_start = capture_epoch_start(tracked)
    top = float(torch.rand(1, generator=generator))
    torch.rand(4, generator=generator)  # the batches before the save
    saved = {"g": tracked["g"].state_dict()}
    expected = float(torch.rand(1, generator=generator))
    point = ResumePoint(name="step-000000007-g0001", step=7, epochs_done=1, batch=3,
                        where=IN_EPOCH, payload={"tracked": saved, RNG: capture_rng(),
                                                 RNG_EPOCH: at_start}, extras={})
    resumed = torch.Generator().manual_seed(3)
    restorer = Restorer(point)
    restorer.load("g", as_tracked("g", resumed))
    restorer.at_epoch_start({"g": as_tracked("g", resumed)})
    assert float(torch.rand(1, generator=resumed)) == top
    restorer.at(IN_EPOCH, {"g": as_tracked("g", resumed)})
    assert float(torch.rand(1, generator=resumed)) == expected


# -- the watch ---------------------------------------------------------------------------


def _loop(watch: GeneratorWatch, tracked: dict[str, Any]) -> None:
    """Stands for a training function: a generator drawn from, one only used to set up, one
    tracked; a boundary, a batch, then the first save."""
    drawn = np.random.default_rng(0)
    setup_only = torch.Generator().manual_seed(0)
    torch.rand(3, generator=setup_only)
    kept = random.Random(0)
    tracked["kept"] = as_tracked("kept", kept)
    watch.look(sys._getframe())
    drawn.random()
    kept.random()
    watch.report(tracked, kept=[])


def test_the_first_save_names_an_untracked_generator_drawn_from_during_training(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exactness, "_said", set())
    watch = GeneratorWatch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _loop(watch, {})
    messages = [str(w.message) for w in caught if w.category is InexactResume]
    assert messages == ["inexact resume: an untracked numpy.random.Generator 'drawn' in "
                        "_loop(); run.track(drawn=drawn) saves it and restores it on resume"]
    assert watch.done
    watch.look(sys._getframe())  # done: the watch costs nothing after the first save
    assert watch.report({}, kept=[]) == []


def test_the_watch_looks_at_boundaries_numbered_by_a_power_of_two(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exactness, "_said", set())
    watch = GeneratorWatch()
    watch.look(sys._getframe())  # 1st: nothing here yet
    late = np.random.default_rng(1)  # made in the loop, after its first boundary
    watch.look(sys._getframe())  # 2nd: seen
    later = np.random.default_rng(2)
    watch.look(sys._getframe())  # 3rd: not looked at
    late.random()
    later.random()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = watch.report({}, kept=[])
    assert [s.name for s in moved] == ["late"]
    assert len([w for w in caught if w.category is InexactResume]) == 1
