"""The one SIGINT/SIGTERM handler: counts interrupts while a run is in progress.

Used by the supervisor (the first interrupt asks the worker to save and stop, a second
kills it) and by the in-process training (the first asks the loop to save and stop, a
second raises ``KeyboardInterrupt``): docs/concepts.md#stopping-control-requests-and-interrupts.
Python delivers signals to the main thread only, so off it installing is a no-op (a run
started from a thread is stopped by its caller, or by a control request).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore(count: int) -> None:
    """The default ``on_interrupt``: the owner reads :attr:`Interrupts.count` itself."""


class Interrupts:
    """A context manager that counts SIGINT/SIGTERM while it is entered.

    Args:
        on_interrupt: called, in the signal handler, with the count so far (1 for the
            first interrupt); what it raises (``KeyboardInterrupt``) unwinds the main thread.
        signals: the signals counted.
    """

    def __init__(self, on_interrupt: Callable[[int], None] = _ignore, *,
                 signals: Sequence[signal.Signals] = INTERRUPT_SIGNALS) -> None:
        self.on_interrupt = on_interrupt
        self.signals = tuple(signals)
        self.count = 0
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def is_installed(self) -> bool:
        """Whether the handler is in place (entered, on the main thread)."""
        return bool(self._previous)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.on_interrupt(self.count)
