"""The ``process`` strategy: one long-lived child serves every save of a session.

Snapshots are copied into *shared* host buffers
(:class:`~colabrun.runner.save.snapshot.HostBuffers` with ``shared=True``), which
the child maps too. Each save sends it a few hundred bytes (the snapshot's
structure, its tensors by reference: pickle's persistent ids), and the child
does the pickling, hashing and writing: Python work that, in a thread, holds the
GIL beside training (benchmarks/README.md#measurements-behind-the-constants).
A new child is forked only when the buffers change (the first save, a new tensor
shape), or the last one died. It frees its inherited view of the live state at
once (:func:`~colabrun.runner.save.child.release_storages`): it reads the buffers only.
"""

from __future__ import annotations

import io
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import IO, Any

import torch

from colabrun.runner.clock import Clock
from colabrun.runner.save.child import (
    ChildSide,
    Done,
    become_writer,
    converse,
    died,
    fork_child,
    reap,
    release_gradients,
    release_storages,
)
from colabrun.runner.save.snapshot import HostBuffers
from colabrun.runner.save.task import (
    PROCESS,
    LocalTarget,
    SaveTask,
    WriteStats,
    Written,
    run_prelude,
)
from colabrun.state.hooks import no_hook

#: how long a writer process may take to exit once told to (seconds)
END_TIMEOUT_S = 5.0


class ProcessWriter:
    """Keeps one writer process, forked anew when the buffers it maps change.

    Args:
        target: where saves commit, and the local rotation.
        clock: the injected clock.
    """

    def __init__(self, target: LocalTarget, *, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._child: _ServedChild | None = None

    def begin(self, task: SaveTask) -> bool:
        """Fork a writer process unless the current one maps ``task``'s buffers.

        Returns:
            Whether a writer process was started.
        """
        assert task.buffers is not None and task.buffers.shared, "shared buffers"
        live = task.buffers.take_sources()
        if self._child is not None and self._child.serves(task.buffers):
            return False
        self.close()  # outdated buffers, or it died (the OOM killer)
        self._child = _ServedChild(self._target, task.buffers, clock=self._clock,
                                   inherited=_Inherited(live, task.gradients_of))
        return True

    def finish(self, task: SaveTask) -> Written:
        """Hand the task over and serve its points until the child reports.

        Returns:
            The manifest and what the write cost (the child's CPU).

        Raises:
            BaseException: a hook's or the child's error (the next save forks anew).
            CheckpointError: the child died before committing.
        """
        child = self._child
        assert child is not None, "begin() first"
        run_prelude(task)
        try:
            child.send(task, routed=self._target.store.on_point is not no_hook,
                       protected=self._target.protected())
        except OSError:
            pass  # it died: said below, once its report ends
        report = converse(child.conn, self._target.store.on_point)
        if isinstance(report, Done):
            return Written(report.manifest, WriteStats(PROCESS, cpu_s=report.cpu_s))
        self.close()  # it died, or was aborted at a point; the next save forks anew
        raise died(child.pid) if report is None else report.error

    def close(self) -> None:
        """End the writer process (it exits after the task in hand), and reap it."""
        child, self._child = self._child, None
        if child is not None:
            child.end()


@dataclass(frozen=True)
class _Inherited:
    """What a writer process forked now frees its view of: the live tensors the
    buffers were copied from, and the gradients of these parameters."""

    live: Sequence[torch.Tensor] = ()
    gradients_of: Sequence[torch.Tensor] = ()


@dataclass(frozen=True)
class _Order:
    """What the child is sent for one save."""

    task: SaveTask
    routed: bool  # pass the save points to the parent's hook
    protected: str | None


class _ServedChild:
    """A writer process forked with ``buffers`` mapped: commits the orders it is sent.

    ``inherited``: what of the training state it frees its view of at once.
    """

    def __init__(self, target: LocalTarget, buffers: HostBuffers, *, clock: Clock,
                 inherited: _Inherited | None = None) -> None:
        self.layout = buffers.layout
        self._buffers = buffers
        self._clock = clock
        parent_end, child_end = Pipe()
        parent = os.getpid()
        pid = fork_child()
        if pid == 0:  # never returns
            parent_end.close()
            _serve(target, buffers, parent, child_end, inherited or _Inherited())
        child_end.close()
        self.pid = pid
        self.conn = parent_end
        self._reaped = False

    def serves(self, buffers: HostBuffers) -> bool:
        """Whether it is alive and maps ``buffers`` as they are now."""
        if buffers is not self._buffers or buffers.layout != self.layout or self._reaped:
            return False
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        self._reaped = done == self.pid
        return not self._reaped

    def send(self, task: SaveTask, *, routed: bool, protected: str | None) -> None:
        """Hand a task over, its shared buffers by reference.

        Raises:
            OSError: the child is gone.
            Exception: the task cannot be pickled (nothing was sent).
        """
        data = io.BytesIO()
        # data only: the parameters whose gradients a fresh child drops stay here
        bare = replace(task, ready=None, before_commit=None, buffers=None, gradients_of=())
        _OrderPickler(data, self._buffers).dump(_Order(bare, routed, protected))
        self.conn.send_bytes(data.getbuffer())

    def end(self) -> None:
        """Close the conversation (it exits after the task in hand), and reap it."""
        self.conn.close()
        if not self._reaped:
            reap(self.pid, clock=self._clock, timeout_s=END_TIMEOUT_S)
            self._reaped = True


class _OrderPickler(pickle.Pickler):
    """Pickles an order with its shared buffers by position (the child maps them too)."""

    def __init__(self, file: IO[bytes], buffers: HostBuffers) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._buffers = buffers

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._buffers.key_of(obj)  # None: not shared, pickled by value
        return None


class _OrderUnpickler(pickle.Unpickler):
    """In the writer process: each shared buffer's position becomes its own view of it."""

    def __init__(self, file: IO[bytes], buffers: HostBuffers) -> None:
        super().__init__(file)
        self._buffers = buffers

    def persistent_load(self, pid: Any) -> Any:
        return self._buffers.buffer(tuple(pid))


def _serve(target: LocalTarget, buffers: HostBuffers, parent: int, conn: Connection,
           inherited: _Inherited) -> None:
    """A writer process: free ``inherited``, then commit each order it reads, report
    each; ``_exit`` at EOF."""
    code = 1
    try:
        become_writer(parent, conn)
        release_gradients(inherited.gradients_of)
        release_storages(inherited.live)
        del inherited
        side = ChildSide(conn)
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:
                break
            order = _OrderUnpickler(io.BytesIO(data), buffers).load()
            target.store.on_point = side.through_parent if order.routed else no_hook
            _commit(target, order, side)
            del order
        code = 0
    except BaseException:
        pass  # the parent sees the conversation end, and reports the death
    finally:
        os._exit(code)


def _commit(target: LocalTarget, order: _Order, side: ChildSide) -> None:
    cpu = time.process_time()
    try:
        manifest = target.commit(order.task, protected=order.protected)
    except Exception as exc:  # this save failed; the next one may not
        side.failed(exc)
        return
    side.done(manifest, time.process_time() - cpu)
