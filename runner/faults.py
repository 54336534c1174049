"""Fault injection: the public API for testing that training really resumes.

Everything here is off unless a test (or ``colabrun chaos``, or the
``COLABRUN_KILL_AT`` knob) turns it on explicitly.

**Points** are named places in the training loop and the save protocol
(:data:`ALL_POINTS`); a *hook* is called with each point's name as it passes::

    runner.run(spec, on_point=KillAt("save.payload_written", nth=2))   # SIGKILL there
    runner.run(spec, on_point=KillAt("save.renamed", tier="root"))     # at the 1st upload's
    runner.run(spec, on_point=RaiseAt("step", at_step=40))             # an exception
    runner.run(spec, on_point=HangAt("step", at_step=40, release=ev))  # a hang

**Storage faults** live at the storage edge: :class:`FaultyFs` is a filesystem
that fails the N-th write/read/rename/fsync with a chosen errno, writes slowly,
hangs writes, silently drops or truncates "uploaded" files (Drive when the VM
dies before its upload, docs/colab.md#drive-pitfalls), serves stale listings, or loses the
whole mount (``ENOTCONN`` on every call, fact 10)::

    fs = FaultyFs(fail=[Fail("replace", nth=1, errno=errno.EIO)])
    runner.run(spec, storage=Storage(fs=fs), on_point=...)

**Durable-state faults** edit a job folder: :func:`corrupt_state`,
:func:`plant_stale_lease`, :func:`lose_upload`; :class:`JumpingClock` makes time jump.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast, get_args

from colabrun.jobs.errors import ColabrunError
from colabrun.runner import knobs
from colabrun.runner.clock import Clock, SystemClock
from colabrun.runner.save.saver import COMMITTED_POINT
from colabrun.runner.storage_faults import Fail, FaultyFs
from colabrun.runner.train.live import LiveProgress
from colabrun.state.checkpoints import ROTATE_POINTS, SAVE_POINTS
from colabrun.state.statefile import STATE_NAME, STATE_WRITE_POINTS

__all__ = [
    "ALL_POINTS", "CountPoints", "Fail", "FaultSpecError", "FaultyFs", "HangAt", "Hook",
    "InjectedFault", "JumpingClock", "KillAt", "LOOP_POINTS", "ROOT_THREADS", "RaiseAt",
    "combine", "corrupt_state", "current_tier", "hook_from_environment", "lose_upload",
    "plant_stale_lease", "tier_of_thread",
]

#: Every named point, loop first, then a save in the order it passes them.
LOOP_POINTS = ("step", "batch", "epoch.end")
ALL_POINTS: tuple[str, ...] = (LOOP_POINTS + SAVE_POINTS + (COMMITTED_POINT,)
                               + STATE_WRITE_POINTS + ROTATE_POINTS)

Hook = Callable[[str], None]

#: Which passes of a point a trigger counts: ``root``, those the uploader makes (copying a
#: checkpoint to the root, rotating the root, recording the upload in ``state.json``);
#: ``local``, every other (the loop, the local save and its rotation, the session's own
#: ``state.json`` writes).
Tier = Literal["local", "root"]
#: How :class:`KillAt` ends the process: ``kill`` (SIGKILL) or ``stop`` (SIGSTOP, for a
#: harness that then kills the whole simulated runtime, see :mod:`colabrun.runner.sim`).
How = Literal["kill", "stop"]
#: The uploader's threads: its own (runner/save/uploader.py) and the storage I/O threads it
#: times its root calls in (state/resilience.py); the hooks learn no more than a point's
#: name, so its thread is what tells an upload's pass from the local save's.
ROOT_THREADS = ("colabrun-uploader", "colabrun-io-")


def tier_of_thread(name: str) -> Tier:
    """The :data:`Tier` of a pass made in the thread called ``name``."""
    return "root" if name.startswith(ROOT_THREADS) else "local"


def current_tier() -> Tier:
    """The :data:`Tier` of a pass made now, by the thread making it."""
    return tier_of_thread(threading.current_thread().name)


class FaultSpecError(ColabrunError, ValueError):
    """A fault-injection request (``COLABRUN_KILL_AT``, ``COLABRUN_KILL_HOW``,
    ``COLABRUN_KILL_PROCESS``) that names no known point, tier, way to die or process."""

    exit_code = 2


class InjectedFault(Exception):
    """The exception :class:`RaiseAt` raises by default."""


class _Trigger:
    """Fires on the ``nth`` pass of ``point`` (or the first at/after ``at_step``); with a
    ``tier``, only that tier's passes count."""

    def __init__(self, point: str, nth: int = 1, *, at_step: int | None = None,
                 progress: LiveProgress | None = None, tier: Tier | None = None) -> None:
        if point not in ALL_POINTS:
            raise FaultSpecError(f"unknown fault point {point!r}; known: {', '.join(ALL_POINTS)}")
        if at_step is not None and progress is None and point != "step":
            raise FaultSpecError("at_step needs the 'step' point, or a LiveProgress")
        if tier is not None and tier not in get_args(Tier):
            raise FaultSpecError(f"unknown tier {tier!r}; known: {', '.join(get_args(Tier))}")
        self.point = point
        self.nth = nth
        self.at_step = at_step
        self.progress = progress
        self.tier = tier
        self.seen = 0
        self.fired = False

    def due(self, point: str) -> bool:
        if point != self.point or self.fired:
            return False
        if self.tier is not None and current_tier() != self.tier:
            return False
        self.seen += 1
        if self.at_step is not None:
            step = self.progress.step if self.progress is not None else self.seen
            hit = step >= self.at_step
        else:
            hit = self.seen >= self.nth
        self.fired = hit
        return hit


class KillAt(_Trigger):
    """SIGKILL this process at a point: what a runtime's death does (F1, F6).

    Args:
        point: one of :data:`ALL_POINTS`.
        nth: the pass of ``point`` to die at (1: the first).
        at_step: instead of ``nth``, die at the first pass at or after this global step.
        progress: where the loop is (to know the step, and to log it).
        log: a JSON-lines file to append ``{point, step, time, thread, pid}`` to before dying.
        tier: count only this tier's passes (:data:`Tier`); ``None``: every pass.
        how: ``kill``, SIGKILL; or ``stop``, SIGSTOP: every thread of the process stops
            there, and a harness reading ``log`` kills the whole simulated runtime (a
            process is stopped, not killed, so the runtime's other processes cannot see it
            die and react). A process continued (SIGCONT) goes on from the point.
    """

    def __init__(self, point: str, nth: int = 1, *, at_step: int | None = None,
                 progress: LiveProgress | None = None, log: Path | None = None,
                 tier: Tier | None = None, how: How = "kill") -> None:
        super().__init__(point, nth, at_step=at_step, progress=progress, tier=tier)
        if how not in get_args(How):
            raise FaultSpecError(f"unknown way to die {how!r}; known: {', '.join(get_args(How))}")
        self.log = log
        self.how = how

    def __call__(self, point: str) -> None:
        if not self.due(point):
            return
        if self.log is not None:
            step = self.progress.step if self.progress is not None else None
            entry = {"point": point, "step": step, "time": time.time(),
                     "thread": threading.current_thread().name, "pid": os.getpid()}
            with open(self.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
        os.kill(os.getpid(), signal.SIGSTOP if self.how == "stop" else signal.SIGKILL)


class RaiseAt(_Trigger):
    """Raise an exception at a point (a bug, or a transient error in user code)."""

    def __init__(self, point: str, nth: int = 1, *, at_step: int | None = None,
                 progress: LiveProgress | None = None,
                 error: Callable[[], BaseException] = lambda: InjectedFault("injected")) -> None:
        super().__init__(point, nth, at_step=at_step, progress=progress)
        self.error = error

    def __call__(self, point: str) -> None:
        if self.due(point):
            raise self.error()


class HangAt(_Trigger):
    """Block at a point until ``release`` is set (a deadlock, F17)."""

    def __init__(self, point: str, nth: int = 1, *, at_step: int | None = None,
                 progress: LiveProgress | None = None,
                 release: threading.Event | None = None) -> None:
        super().__init__(point, nth, at_step=at_step, progress=progress)
        self.release = release or threading.Event()

    def __call__(self, point: str) -> None:
        if self.due(point):
            self.release.wait()


class CountPoints:
    """A hook that only counts how often each point passes."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, point: str) -> None:
        self.counts[point] = self.counts.get(point, 0) + 1


def combine(*hooks: Hook | None) -> Hook:
    """One hook calling each of ``hooks`` in turn."""
    active = [h for h in hooks if h is not None]

    def hook(point: str) -> None:
        for each in active:
            each(point)

    return hook


def hook_from_environment(attempt: int = 0, *, progress: LiveProgress | None = None,
                          process: int = 0) -> Hook | None:
    """The kill hook ``COLABRUN_KILL_AT`` asks for this worker attempt, if any.

    ``POINT[@TIER][:N],...``: the i-th entry applies to the i-th attempt of a
    session (restarted workers), so a test can kill a worker several times.
    ``COLABRUN_KILL_HOW=stop`` stops the process instead (see :class:`KillAt`).
    ``COLABRUN_KILL_PROCESS=P`` aims them at process ``P`` of a group (0, the leader, by
    default): every other process gets no hook.

    Args:
        attempt: the worker attempt of the session (0: the first).
        progress: where the loop is (to know the step, and to log it).
        process: this process's index in its group (0: the leader, or a process alone).

    Returns:
        The hook, or ``None`` when nothing is asked for this attempt and process.

    Raises:
        FaultSpecError: an entry naming no known point or tier, an ``N`` that is not an
            integer, an unknown ``COLABRUN_KILL_HOW`` (or ``stop`` without a kill log),
            or a ``COLABRUN_KILL_PROCESS`` that is no process index.
    """
    entries = _kill_entries()
    how, log, target = _kill_how(), knobs.kill_log(), _kill_process()
    if how == "stop" and log is None and entries:
        raise FaultSpecError("COLABRUN_KILL_HOW=stop needs COLABRUN_KILL_LOG=FILE: without it "
                             "nothing learns that the process stopped")
    if attempt >= len(entries) or process != target:
        return None
    entry = entries[attempt]
    return KillAt(entry.point, entry.nth, progress=progress, log=log,
                  tier=cast(Tier | None, entry.tier), how=how)


def _kill_entries() -> list[knobs.KillEntry]:
    try:
        entries = knobs.kill_at()
    except ValueError as exc:
        raise FaultSpecError(f"COLABRUN_KILL_AT: {exc}; write POINT, POINT:N or "
                             "POINT@TIER:N, comma-separated (e.g. step:40,save.renamed@root:2)"
                             ) from exc
    for entry in entries:
        if entry.point not in ALL_POINTS:
            raise FaultSpecError(f"COLABRUN_KILL_AT: unknown fault point {entry.point!r}; "
                                 f"known: {', '.join(ALL_POINTS)}")
        if entry.tier is not None and entry.tier not in get_args(Tier):
            raise FaultSpecError(f"COLABRUN_KILL_AT: unknown tier {entry.tier!r} in "
                                 f"{entry.point}@{entry.tier}; known: {', '.join(get_args(Tier))}")
    return entries


def _kill_process() -> int:
    try:
        return knobs.kill_process()
    except ValueError as exc:
        raise FaultSpecError(f"COLABRUN_KILL_PROCESS: {exc}; write the index of the worker "
                             "process to kill: 0 (the leader, the default), 1, ...") from exc


def _kill_how() -> How:
    how = knobs.kill_how()
    if how not in get_args(How):
        raise FaultSpecError(f"COLABRUN_KILL_HOW: {how!r} is neither 'kill' nor 'stop'")
    return cast(How, how)


# -- durable-state faults ------------------------------------------------------------------


def corrupt_state(job_dir: Path, how: str = "garbage") -> None:
    """Damage ``state.json``: ``garbage`` bytes, or ``truncate`` it to half."""
    path = job_dir / STATE_NAME
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"\x00not json{{")


def plant_stale_lease(job_dir: Path, *, age_s: float, host: str = "gone-vm",
                      pid: int = 999_999, duration_s: float = 45.0) -> None:
    """Leave the lease of a runtime that died ``age_s`` seconds ago (F4), taken for
    ``duration_s``."""
    path = job_dir / STATE_NAME
    data = json.loads(path.read_text())
    now = time.time()
    data["status"] = "running"
    data["lease"] = {"owner": f"{host}-deadbeef", "host": host, "pid": pid,
                     "generation": data.get("generation", 0), "acquired_at": now - age_s,
                     "heartbeat_at": now - age_s, "duration_s": duration_s, "token": "stale"}
    path.write_text(json.dumps(data, indent=2))


def lose_upload(path: Path, how: str = "truncate") -> None:
    """Make ``path`` look like a write that never reached Drive (F10)."""
    if how == "delete":
        path.unlink()
    else:
        os.truncate(path, 0 if how == "truncate" else path.stat().st_size // 2)


class JumpingClock:
    """A clock whose wall time (and optionally monotonic time) can jump."""

    def __init__(self, base: Clock | None = None) -> None:
        self.base = base or SystemClock()
        self.wall_offset = 0.0
        self.mono_offset = 0.0

    def jump(self, seconds: float, *, monotonic: bool = False) -> None:
        """Move the wall clock (NTP, a laptop waking); ``monotonic`` too if asked."""
        self.wall_offset += seconds
        if monotonic:
            self.mono_offset += seconds

    def monotonic(self) -> float:
        return self.base.monotonic() + self.mono_offset

    def time(self) -> float:
        return self.base.time() + self.wall_offset

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)
