"""The ``fork`` strategy: a child forked for each save writes the live tensors.

The training process forks and the child serialises the tensors from its
copy-on-write view of memory, as Redis does for background saves. The only stall
is ``fork()`` itself (tens of milliseconds for gigabytes), not a copy; pages the
parent modifies while the child writes are copied by the kernel, one page at a
time, so memory grows by at most one snapshot. Those copies are training's to pay,
in the steps after the save: when training rewrites the whole state at every step
(any dense optimizer), a copy costs less (:func:`~colabrun.runner.save.snapshot.choose_mode`).
"""

from __future__ import annotations

import os
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from colabrun.runner.clock import Clock
from colabrun.runner.save.child import (
    ChildSide,
    Failed,
    become_writer,
    converse,
    died,
    fork_child,
    reap,
    release_gradients,
)
from colabrun.runner.save.snapshot import FORK
from colabrun.runner.save.task import LocalTarget, SaveTask, WriteStats, Written, run_prelude


class ForkWriter:
    """Forks a writer child per save, at :meth:`begin`, and converses with it.

    Args:
        target: where saves commit, and the local rotation.
        clock: the injected clock.
    """

    def __init__(self, target: LocalTarget, *, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._child: tuple[int, Connection] | None = None

    def begin(self, task: SaveTask) -> bool:
        """Fork the child now, in the caller's thread: it sees memory exactly as it is.

        Returns:
            ``False``: the child lives for this save only.
        """
        parent_end, child_end = Pipe()
        parent = os.getpid()
        protected = self._target.protected()
        pid = fork_child()
        if pid == 0:  # the child: commit, report, exit; never returns
            parent_end.close()
            _write_once(self._target, task, parent, child_end, protected=protected)
        child_end.close()
        self._child = (pid, parent_end)
        return False

    def finish(self, task: SaveTask) -> Written:
        """Run the prelude while the child waits at its first point, serve its points,
        reap it.

        Returns:
            The manifest and what the write cost (the child's CPU and peak memory).

        Raises:
            BaseException: the prelude's, a hook's or the child's error.
            CheckpointError: the child died before committing.
        """
        assert self._child is not None, "begin() first"
        (pid, conn), self._child = self._child, None
        with conn:  # closing it before the child's commit aborts the child
            try:
                run_prelude(task)  # the child waits for our first answer: it cannot
            except BaseException:  # commit before this ran
                conn.close()
                reap(pid, clock=self._clock)
                raise
            report = converse(conn, self._target.store.on_point)
        status, usage = reap(pid, clock=self._clock)
        if isinstance(report, Failed):
            raise report.error
        if report is None:
            raise died(pid, status)
        cpu_s = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
        rss = usage.ru_maxrss * 1024 if usage is not None else 0
        return Written(report.manifest, WriteStats(FORK, cpu_s=cpu_s, child_max_rss=rss))

    def close(self) -> None:
        """Nothing is kept between saves: each child exits after its own."""


def _write_once(target: LocalTarget, task: SaveTask, parent: int, conn: Connection, *,
                protected: str | None) -> None:
    """The child forked for one save: commit ``task``, report to the parent, ``_exit``."""
    code = 1
    side: ChildSide | None = None
    try:
        become_writer(parent, conn)
        release_gradients(task.gradients_of)
        side = ChildSide(conn)
        target.store.on_point = side.through_parent
        cpu = time.process_time()
        manifest = target.commit(task, protected=protected)
        side.done(manifest, time.process_time() - cpu)
        code = 0
    except BaseException as exc:
        if side is not None:
            side.failed(exc)
    finally:
        os._exit(code)
