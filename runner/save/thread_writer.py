"""The ``thread`` strategy: the writer's own thread serialises a copied snapshot.

Where fork is not safe (macOS, Windows), and for snapshots of CUDA tensors (pinned
buffers, which a writer process does not share). It runs in the training process, at
its priority: a thread at a lower one would hold the GIL while waiting for a core.
"""

from __future__ import annotations

import time

from colabrun.runner.save.task import (
    THREAD,
    LocalTarget,
    SaveTask,
    WriteStats,
    Written,
    run_prelude,
)


class ThreadWriter:
    """Commits a copied snapshot in the calling (writer) thread.

    Args:
        target: where saves commit, and the local rotation.
    """

    def __init__(self, target: LocalTarget) -> None:
        self._target = target

    def begin(self, task: SaveTask) -> bool:
        """Nothing to prepare: the snapshot is a copy already.

        Returns:
            ``False``: no writer process is started.
        """
        return False

    def finish(self, task: SaveTask) -> Written:
        """Wait for the prelude, then commit and rotate, timing this thread's CPU.

        Returns:
            The manifest and what the write cost.

        Raises:
            BaseException: the commit's error; the previous checkpoint is intact.
        """
        run_prelude(task)
        cpu = time.thread_time()
        manifest = self._target.commit(task, protected=self._target.protected())
        return Written(manifest, WriteStats(THREAD, cpu_s=time.thread_time() - cpu))

    def close(self) -> None:
        """Nothing is kept between saves."""
