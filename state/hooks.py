"""Fault-injection hooks: a named point of a write protocol, and the hook that ignores it."""

from __future__ import annotations

from collections.abc import Callable

#: called with the name of each point a write protocol passes
Hook = Callable[[str], None]


def no_hook(point: str) -> None:
    """The hook of a run without fault injection: does nothing.

    Identity matters: a background writer passes its points to the training
    process only when the hook is something else.
    """
    return None
