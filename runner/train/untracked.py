"""Finding random generators the training loop draws from that no checkpoint keeps.

A generator the user made (``torch.Generator()``, ``np.random.default_rng()``,
``random.Random()``) and did not pass to ``run.track`` restarts from its first state
after a resume: the run is not exact. :class:`GeneratorWatch` looks at the training
loop's frames (the frame iterating ``run.batches()``/``run.epochs()`` and its callers
up to the training function, their locals and their module's globals) at the 1st, 2nd,
4th, 8th... boundary until the first save (a notebook's globals may be hundreds of
names: not at every batch of a run whose first save comes minutes in); there, a
generator seen before whose state has moved since, not tracked, not one colabrun keeps
otherwise, is named once with
:func:`~colabrun.runner.train.exactness.warn_inexact`. A generator only used in setup
(to make data) never moves after the first boundary, and is left alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from colabrun.runner.train.exactness import warn_inexact
from colabrun.runner.train.generators import GeneratorState, as_stateful, is_generator, is_global

#: at most this many generators are watched (a loop making one per batch stays cheap)
MAX_WATCHED = 256
_OWN = "colabrun."  # the modules whose frames are colabrun's, not the user's


@dataclass(frozen=True)
class Sighting:
    """A generator seen in a frame: where, under which name, and its state then."""

    name: str
    where: str
    adapter: GeneratorState
    fingerprint: bytes


def user_frames(frame: FrameType | None) -> Iterator[FrameType]:
    """From ``frame`` (inside colabrun) outwards: the user's frames, up to the next of
    colabrun's (the runner that called the training function)."""
    while frame is not None and _is_own(frame):
        frame = frame.f_back
    while frame is not None and not _is_own(frame):
        yield frame
        frame = frame.f_back


def generators_in(frame: FrameType) -> Iterator[tuple[str, str, Any]]:
    """``(name, where, generator)`` for each generator a frame's locals and globals name."""
    where = f"{frame.f_code.co_name}()"
    module = f"module {frame.f_globals.get('__name__', '?')}"
    for names, place in ((frame.f_locals, where), (frame.f_globals, module)):
        for name, value in list(names.items()):
            if _is_generator(value):
                yield name, place, value


class GeneratorWatch:
    """Watches the loop's frames until the first save; then names what moved untracked."""

    def __init__(self) -> None:
        self._seen: dict[int, Sighting] = {}
        self._boundaries = 0
        self.done = False

    def look(self, frame: FrameType | None) -> None:
        """At a boundary: note the generators in the loop's frames not seen yet (at the
        boundaries numbered by a power of two)."""
        if self.done:
            return
        self._boundaries += 1
        if self._boundaries & (self._boundaries - 1):
            return
        for user in user_frames(frame):
            for name, where, generator in generators_in(user):
                if id(generator) in self._seen or len(self._seen) >= MAX_WATCHED:
                    continue
                adapter = as_stateful(generator, name)
                assert adapter is not None  # generators_in yields generators only
                self._seen[id(generator)] = Sighting(name, where, adapter, adapter.fingerprint())

    def report(self, tracked: Mapping[str, object], *, kept: list[object]) -> list[Sighting]:
        """At the first save: warn once about each watched generator that moved, is not
        tracked and not in ``kept`` (the loader's own); then stop watching.

        Returns:
            The generators warned about.
        """
        self.done = True
        seen, self._seen = self._seen, {}
        kept = kept + [obj.generator for obj in tracked.values()
                       if isinstance(obj, GeneratorState)]
        moved = [s for s in seen.values()
                 if not any(s.adapter.generator is k for k in kept)
                 and s.adapter.fingerprint() != s.fingerprint]
        for sighting in moved:
            name = sighting.name
            warn_inexact(f"an untracked {sighting.adapter.kind} {name!r} in {sighting.where}",
                         f"run.track({name}={name}) saves it and restores it on resume",
                         stacklevel=5)
        return moved


def current_frame() -> FrameType:
    """The caller's frame."""
    return sys._getframe(1)


def _is_own(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(_OWN)


def _is_generator(value: Any) -> bool:
    return is_generator(value) and not is_global(value)
