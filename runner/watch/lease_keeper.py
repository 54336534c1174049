"""The lease keeper: a daemon thread that refreshes the job's lease in ``state.json``.

The owner of a job writes a heartbeat into its lease every ``lease_s / 4``, whatever the
training is doing (docs/concepts.md#the-lease); each refresh first checks the fence, so a
runner that was taken over finds out here (docs/concepts.md#generation-and-fencing).
One :meth:`LeaseKeeper.tick` is one refresh and returns how it went; the thread is a loop
of ticks paced by a :class:`threading.Event`'s ``wait``, which is also how it is stopped.
A caller with a thread of its own (the saver's uploader) paces refreshes itself and calls
:meth:`LeaseKeeper.refresh` there instead of starting the keeper's thread.
Problems are handed as data to ``on_problem``, on the keeper's thread; nothing is raised
in it. A lost lease ends the thread (nothing more may be written) and stays readable as
:attr:`LeaseKeeper.lost`; a failing storage does not (training goes on locally, and the
next refresh may reach the root again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Protocol

from colabrun.jobs.errors import ColabrunError
from colabrun.runner.clock import Clock
from colabrun.state.lease import Fence, LeaseLost, heartbeat
from colabrun.state.model import JobState


class LeaseStore(Protocol):
    """Where the lease lives: a job's :class:`~colabrun.state.statefile.StateFile`."""

    def update(self, change: Callable[[JobState], JobState]) -> JobState: ...


class Refresh(str, Enum):
    """How one refresh of the lease went."""

    REFRESHED = "refreshed"            # the heartbeat is written
    LOST = "lost"                      # another runner owns the job now: stop writing
    STORAGE_FAILED = "storage_failed"  # the state file could not be read or written


@dataclass(frozen=True)
class LeaseReport:
    """One refresh: its outcome, the wall time written (or tried), and the error if any."""

    outcome: Refresh
    at: float
    error: ColabrunError | OSError | None = None

    @property
    def is_problem(self) -> bool:
        """Whether the refresh failed."""
        return self.outcome is not Refresh.REFRESHED


def _no_report(report: LeaseReport) -> None:
    """The default ``on_problem``: the owner polls :attr:`LeaseKeeper.lost` instead."""


class LeaseKeeper:
    """Refreshes one fenced lease, on its own thread or tick by tick.

    Args:
        store: the job's state file.
        fence: the lease this runner holds.
        interval_s: time between refreshes on the thread (``lease_s / 4``).
        clock: the injected clock; its wall time is the heartbeat written.
        on_problem: told each failed refresh, as data, on the keeper's thread.
    """

    def __init__(self, store: LeaseStore, fence: Fence, *, interval_s: float, clock: Clock,
                 on_problem: Callable[[LeaseReport], None] = _no_report) -> None:
        self.store = store
        self.fence = fence
        self.interval_s = interval_s
        self.clock = clock
        self.on_problem = on_problem
        self.last: LeaseReport | None = None
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="colabrun-lease", daemon=True)

    def tick(self) -> LeaseReport:
        """Refresh the lease once (after checking the fence) and say how it went.

        Returns:
            The report; a failure is also handed to ``on_problem``. Never raises for the
            lease or the storage.
        """
        now = self.clock.time()
        try:
            self.store.update(lambda s: heartbeat(s, self.fence, now=now))
        except LeaseLost as exc:
            self.lost = exc
            report = LeaseReport(Refresh.LOST, now, exc)
        except (ColabrunError, OSError) as exc:  # a lost mount: training goes on locally
            report = LeaseReport(Refresh.STORAGE_FAILED, now, exc)
        else:
            report = LeaseReport(Refresh.REFRESHED, now)
        self.last = report
        if report.is_problem:
            self.on_problem(report)
        return report

    def refresh(self) -> None:
        """One :meth:`tick`, for a caller that refreshes on a thread of its own (the saver's
        uploader) and must stop writing when the lease is lost.

        Raises:
            LeaseLost: another runner took the job over (a storage failure only goes to
                ``on_problem``).
        """
        self.tick()
        self.raise_if_lost()

    def start(self) -> None:
        """Start the thread: a first refresh after ``interval_s``, then every ``interval_s``."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait for it (a refresh stuck on a hung mount is left behind:
        the thread is a daemon).

        Args:
            timeout_s: how long to wait for a refresh in progress.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    @property
    def is_running(self) -> bool:
        """Whether the thread is refreshing (started, neither stopped nor lost)."""
        return self._thread.is_alive()

    def raise_if_lost(self) -> None:
        """Raise what a refresh found, for a caller that writes next.

        Raises:
            LeaseLost: another runner took the job over.
        """
        if self.lost is not None:
            raise self.lost

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.tick().outcome is Refresh.LOST:
                return
