"""The background writer: commits snapshots to local disk off the training thread.

Training blocks only to take the snapshot (:mod:`colabrun.runner.save.snapshot`);
serialising, writing and the commit happen here, with at most one save in
flight. Each save names its mode (:func:`~colabrun.runner.save.task.writer_mode`),
and the mode's :class:`~colabrun.runner.save.task.WriteStrategy` writes it:
:mod:`~colabrun.runner.save.thread_writer`, :mod:`~colabrun.runner.save.fork_writer`
or :mod:`~colabrun.runner.save.process_writer`. One thread per session
(``colabrun-writer``) finishes every save, whatever its mode. Errors of a save
are kept and raised at the next step (:meth:`Writer.raise_error`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from colabrun.runner.clock import Clock, SystemClock
from colabrun.runner.save.fork_writer import ForkWriter
from colabrun.runner.save.process_writer import ProcessWriter
from colabrun.runner.save.snapshot import FORK
from colabrun.runner.save.task import (
    PROCESS,
    THREAD,
    LocalTarget,
    SaveTask,
    WriteStats,
    WriteStrategy,
)
from colabrun.runner.save.thread_writer import ThreadWriter
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.manifest import Manifest

Committed = Callable[[Manifest, WriteStats], None]

#: how long :meth:`Writer.close` waits for the writer's thread (seconds)
JOIN_TIMEOUT_S = 5.0


class Writer:
    """Commits :class:`SaveTask` s to ``local``, one at a time, in the background,
    and after each commit removes all but the ``keep`` newest local checkpoints.

    Args:
        local: the local staging store.
        on_committed: told about each commit, from the writer's thread.
        keep: local checkpoints kept, the new one included.
        protected: the name of a local checkpoint never to remove now (the one
            being uploaded), asked before each save is written.
        clock: the injected clock (write durations, a writer process's exit).
    """

    def __init__(self, local: CheckpointStore, *, on_committed: Committed, keep: int = 2,
                 protected: Callable[[], str | None] = lambda: None,
                 clock: Clock | None = None) -> None:
        self.local = local
        self.keep = keep
        self._on_committed = on_committed
        self._clock = clock or SystemClock()
        target = LocalTarget(local, keep, protected)
        self._strategies: dict[str, WriteStrategy] = {
            THREAD: ThreadWriter(target),
            PROCESS: ProcessWriter(target, clock=self._clock),
            FORK: ForkWriter(target, clock=self._clock),
        }
        self._idle = threading.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._tasks: queue.SimpleQueue[tuple[SaveTask, WriteStrategy] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """Whether a save is in flight."""
        return not self._idle.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the save in flight; False on timeout."""
        return self._idle.wait(timeout_s)

    def raise_error(self) -> None:
        """Raise (once) the error of the last background save, if it failed."""
        error, self.error = self.error, None
        if error is not None:
            raise error

    def submit(self, task: SaveTask, *, mode: str) -> bool:
        """Start writing ``task`` in the background (the caller waited for the last one).

        A fork happens here, in the caller's thread: in ``fork`` mode for every
        save (the child sees memory exactly as it is now); in ``process`` mode
        when there is no child yet, or its buffers are outdated.

        Args:
            task: the save.
            mode: ``thread``, ``process`` or ``fork`` (:func:`writer_mode`).

        Returns:
            Whether a writer process was started for this and later saves.
        """
        assert not self.busy, "one save in flight at most: wait() first"
        self._idle.clear()
        try:
            strategy = self._strategies[mode]
            started = strategy.begin(task)
            self._start_thread()
            self._tasks.put((task, strategy))
            return started
        except BaseException:
            self._idle.set()
            raise

    def close(self) -> None:
        """End the writer thread and child once the save in flight (if any) is written."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            self._thread = None
        for strategy in self._strategies.values():
            strategy.close()

    def _start_thread(self) -> None:
        if self._thread is None:  # one thread for all the session's saves
            self._thread = threading.Thread(target=self._serve, name="colabrun-writer",
                                            daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while (item := self._tasks.get()) is not None:
            self._finish(*item)

    def _finish(self, task: SaveTask, strategy: WriteStrategy) -> None:
        started = self._clock.monotonic()
        try:
            manifest, stats = strategy.finish(task)
            stats.write_s = self._clock.monotonic() - started
            self._on_committed(manifest, stats)
        except BaseException as exc:  # raised at the next step
            self.error = exc
        finally:
            self._idle.set()
