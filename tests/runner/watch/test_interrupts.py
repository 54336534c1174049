"""The one interrupt handler, with real signals raised in this (main) thread."""

from __future__ import annotations

import signal
import threading

import pytest

from colabrun.runner.train.live import Controls
from colabrun.runner.train.training import interrupts_request_stop
from colabrun.runner.watch.interrupts import Interrupts


def test_interrupts_are_counted_then_the_previous_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen: list[int] = []
    with Interrupts(seen.append) as interrupts:
        assert interrupts.is_installed
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert interrupts.count == 2 and seen == [1, 2]
    assert not interrupts.is_installed
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_off_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGINT)
    installed: list[bool] = []

    def enter() -> None:
        with Interrupts() as interrupts:
            installed.append(interrupts.is_installed)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join(5.0)
    assert installed == [False]
    assert signal.getsignal(signal.SIGINT) is before


def test_in_process_training_saves_at_the_first_and_stops_at_the_second() -> None:
    controls = Controls()
    with pytest.raises(KeyboardInterrupt), interrupts_request_stop(controls):
        signal.raise_signal(signal.SIGINT)
        assert controls.stop_reason == "interrupted" and controls.interrupts == 1
        signal.raise_signal(signal.SIGTERM)
    assert controls.interrupts == 2
