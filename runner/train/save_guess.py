"""The deadline's guess of one save before a save was measured: the state's size over the
root's measured write speed (docs/concepts.md, "The deadline").

A job that saved before has learned what a save takes (``state.json``'s timings), and a
session's first save is measured at once; this guess covers a new job's first minutes,
when a runtime's budget is known. A short probe write to the root measures its speed in the
background while training starts; the state's size is counted at the first boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from colabrun.jobs.handle import Stateful
from colabrun.runner.clock import Clock
from colabrun.runner.commands.report import human_bytes
from colabrun.runner.watch.deadline import Deadline
from colabrun.state.storage import Storage

#: what the probe writes to the root (bytes): enough to see the bandwidth past the latency
PROBE_BYTES = 4 << 20
#: a save's costs besides its bytes: the manifest, renames, the state.json round trip (s)
FIXED_S = 1.0
#: the probe's folder under the checkpoints: a ``.tmp-`` leftover, deleted like any other
PROBE_FOLDER = ".tmp-write-probe"


def state_bytes(tracked: Mapping[str, Stateful]) -> int:
    """The bytes of every tensor in the tracked objects' state dicts."""
    return sum(_tensor_bytes(obj.state_dict()) for obj in tracked.values())


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def guess_save_s(nbytes: int, bytes_per_s: float) -> float:
    """Seconds one save of ``nbytes`` takes at ``bytes_per_s``. Pure."""
    return FIXED_S + nbytes / bytes_per_s


class WriteProbe:
    """The root's write speed, measured once in a daemon thread: :data:`PROBE_BYTES`
    written and fsynced under ``folder``, timed, then deleted.

    Args:
        storage: the root's storage edge.
        folder: where to write (created, then deleted with its file).
        clock: the injected clock.
    """

    def __init__(self, storage: Storage, folder: Path, clock: Clock) -> None:
        self._storage, self._folder, self._clock = storage, folder, clock
        self.bytes_per_s: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="colabrun-write-probe",
                                        daemon=True)

    def start(self) -> WriteProbe:
        """Start measuring; :attr:`bytes_per_s` is set when done."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait for the measurement (tests)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._storage.makedirs(self._folder)
            started = self._clock.monotonic()
            self._storage.write_bytes(self._folder / "probe", bytes(PROBE_BYTES))
            took = self._clock.monotonic() - started
            self._storage.discard_tree(self._folder)
            self.bytes_per_s = PROBE_BYTES / max(took, 1e-6)
        except Exception as exc:  # no guess then: the deadline keeps its assumed save
            self.error = exc


class SaveGuess:
    """One save's expected seconds, once the probe is done: counted once, said once when
    the runtime's budget cannot hold it.

    Args:
        probe: the root's write speed.
        deadline: the runtime's deadline.
        clock: the injected clock.
        warn: receives the line saying a save does not fit in what is left.
    """

    def __init__(self, probe: WriteProbe, deadline: Deadline, clock: Clock,
                 warn: Callable[[str], None]) -> None:
        self._probe, self._deadline, self._clock, self._warn = probe, deadline, clock, warn
        self._seconds: float | None = None

    def seconds(self, tracked: Mapping[str, Stateful], step_s: float | None) -> float | None:
        """The guess, or ``None`` while the root's speed is not measured."""
        speed = self._probe.bytes_per_s
        if self._seconds is None and speed is not None and tracked:
            size = state_bytes(tracked)
            self._seconds = guess_save_s(size, speed)
            self._say_if_it_does_not_fit(size, speed, step_s)
        return self._seconds

    def _say_if_it_does_not_fit(self, size: int, speed: float, step_s: float | None) -> None:
        assert self._seconds is not None
        left = self._deadline.time_left(self._clock.time())
        needed = self._deadline.needed_s(step_s=step_s, save_s=self._seconds)
        if left is None or left > needed:
            return
        self._warn(f"one save of this job's state ({human_bytes(size)} at "
                   f"{human_bytes(int(speed))}/s to the root, measured) takes about "
                   f"{self._seconds:.0f} s, and this runtime's budget has {max(left, 0):.0f} s "
                   f"left with its margin ({needed:.0f} s needed): the job saves now and "
                   "stops. Raise budget_s, or run it on a runtime with more time left")
