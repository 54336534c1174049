"""Threads that run time-limited storage calls, reused while calls keep coming.

A call to a mount that hangs (Drive's FUSE, COLAB.md F9) cannot be interrupted:
:class:`~state.storage.Storage` runs each call in another thread and gives up
on it after a limit. A thread started per call must take the GIL from a busy
training thread before it can even run: on a 2-core VM, bursts of 18 calls
(one upload's) every 20 ms took 9 ms each and slowed a training thread by a
third. Here a call is handed to an idle thread (a queue put and an event): the
same bursts took 2.7 ms and slowed it by 0-8%. A thread idle for
:data:`IDLE_S` ends, so none lingers after a burst. A call that outlives its
limit keeps its thread: the caller moves on, and the next call gets another.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

#: seconds an idle thread waits for another call before it ends
IDLE_S = 0.25


class _Worker:
    def __init__(self, pool: IoThreads) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pool = pool
        self.thread = threading.Thread(target=self._serve, name="colabrun-io", daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=self._pool.idle_s)
            except queue.Empty:
                if self._pool.retire(self):
                    return
                continue  # taken in the meantime: its call is on the way
            job()
            self._pool.release(self)


class IoThreads:
    """A pool of daemon threads for calls that may hang (see the module's docstring)."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def run(self, fn: Callable[[], Any], limit_s: float) -> tuple[bool, Any, BaseException | None]:
        """Run ``fn`` in a pooled thread for up to ``limit_s`` seconds.

        Returns:
            ``(finished, value, error)``: ``finished`` is False when the call is
            still running after ``limit_s`` (it goes on, abandoned).
        """
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            worker.thread.start()
        done = threading.Event()
        box: list[Any] = [None, None]

        def job() -> None:
            try:
                box[0] = fn()
            except BaseException as exc:  # handed back to the caller
                box[1] = exc
            finally:
                done.set()

        worker.jobs.put(job)
        if not done.wait(limit_s):
            return False, None, None
        return True, box[0], box[1]

    def release(self, worker: _Worker) -> None:
        """A worker finished its call: it takes the next one."""
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """Whether an idle worker may end (no caller took it meanwhile)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def _after_fork(self) -> None:
        # a forked child has none of the parent's threads, and a lock held by one
        # of them at the fork would stay held
        self._lock = threading.Lock()
        self._idle = []


#: the pool every :class:`~state.storage.Storage` shares
POOL = IoThreads()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._after_fork)
