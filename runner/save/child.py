"""What the two forking strategies share: forking a writer child, what the child
does first, and the conversation between the two over one
:class:`multiprocessing.connection.Connection`.

A child runs nothing but commits, dies with its parent, and calls the fault hooks
*through* the parent: at each save point it sends :class:`Point` and waits for the
parent's answer (``True``: go on; ``False``, or the parent gone: exit), so a
SIGKILL injected mid-save kills the training process as a runtime's death would.
A save ends with :class:`Done` or :class:`Failed`; a child that dies ends the
conversation with an end of file.

Only small control values travel with ``send``: torch registers reductions with
multiprocessing's pickler that would move tensors through shared memory.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from colabrun.jobs.errors import CheckpointError
from colabrun.runner.clock import Clock
from colabrun.runner.platform import die_with_parent
from colabrun.state.manifest import Manifest

if TYPE_CHECKING:
    import torch

#: how often a timed reap looks whether the child exited (seconds)
REAP_POLL_S = 0.005


@dataclass(frozen=True)
class Point:
    """From the child: it reached save point ``name``; answer to let it go on."""

    name: str


@dataclass(frozen=True)
class Done:
    """From the child: the save committed, using ``cpu_s`` seconds of its CPU."""

    manifest: Manifest
    cpu_s: float


@dataclass(frozen=True)
class Failed:
    """The save failed with ``error`` (the child's, or a hook's in the parent)."""

    error: BaseException


def fork_child() -> int:
    """``os.fork()``, quiet about forking a threaded process (the child takes no lock)."""
    with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock"
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def become_writer(parent: int, conn: Connection) -> None:
    """In a freshly forked child: nothing inherited is ever collected, die with the
    parent, keep only ``conn`` (and the standard) descriptors, quiet streams. It keeps
    the training process's CPU priority: at the lowest (``SCHED_IDLE``) a busy CPU
    starved it, and the loop waited for it at the next save
    (benchmarks/README.md#measurements-behind-the-constants)."""
    # The parent's garbage may hold storages (a DataLoader's shared-memory batches)
    # whose descriptors are closed below; torch aborts the process freeing one.
    gc.freeze()
    die_with_parent(parent)  # and exit now if the parent died between fork and request
    close_fds_except(0, 1, 2, conn.fileno())
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the worker's
    # streams forward to the supervisor's socket, closed just above


def release_gradients(params: Iterable[torch.Tensor]) -> None:
    """In a forked writer: drop the inherited gradients, which no checkpoint holds.

    The parent frees its gradients at its next ``zero_grad()`` and allocates new
    ones in the next backward; pages the child still maps would stay allocated
    until the child ends, one model's worth of memory more. Measured on the
    benchmark's 0.8 GB state (256 MiB of gradients): peak 2507 MiB without this,
    2267 MiB with it. Freed here, large ones are unmapped at once.
    """
    for param in params:
        param.grad = None


def release_storages(tensors: Iterable[torch.Tensor]) -> int:
    """In a writer process that reads copies only: free its inherited view of the live
    tensors (``resize_(0)`` of each storage, in this process only).

    Training rewrites them at every step; while this process maps the old pages, each
    write copies one (a copy-on-write fault) and the copy stays: the state's size more
    memory for the session. Once they are freed here, the parent's next write of a page
    keeps the page it has. Storages another allocator owns (shared memory, a file's
    mapping, NumPy's) are left alone. The caller must never read ``tensors`` again.

    Returns:
        The bytes freed.
    """
    freed = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if tensor.device.type != "cpu" or storage.is_shared() or not storage.resizable():
            continue
        freed += storage.nbytes()
        storage.resize_(0)
    return freed


def close_fds_except(*keep: int) -> None:
    """Close inherited descriptors (sockets to the supervisor, files) but ``keep``."""
    limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096
    previous = -1
    for fd in sorted(set(keep)) + [limit]:
        if fd > previous + 1:  # closerange(a, b) with b <= a closes EVERYTHING (CPython)
            os.closerange(previous + 1, fd)
        previous = fd


class ChildSide:
    """A writer child's end of the conversation."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def through_parent(self, point: str) -> None:
        """A save point's hook, run by the parent while this child waits."""
        try:
            self._conn.send(Point(point))
            go_on = self._conn.recv()
        except (EOFError, OSError):
            go_on = False  # the parent is gone, or closed the conversation
        if go_on is not True:
            os._exit(1)

    def done(self, manifest: Manifest, cpu_s: float) -> None:
        """Report a commit."""
        self._conn.send(Done(manifest, cpu_s))

    def failed(self, error: BaseException) -> None:
        """Report a failed save (best effort: the parent may be gone)."""
        try:
            self._conn.send(Failed(_portable(error)))
        except Exception:
            pass


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives a pickle round trip, else a :class:`CheckpointError`
    that names it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return CheckpointError(f"background save failed: {error!r}")
    return error


def converse(conn: Connection, on_point: Callable[[str], None]) -> Done | Failed | None:
    """Serve a child's points until it reports: :class:`Done` or :class:`Failed`,
    ``None`` when it died. A hook that raises fails the save; the child is told
    to stop.

    Args:
        conn: the parent's end.
        on_point: the save points' hook, run here in the parent.

    Returns:
        The child's report, or ``None``.
    """
    try:
        while isinstance(message := conn.recv(), Point):
            try:
                on_point(message.name)
            except BaseException as exc:
                _answer(conn, go_on=False)
                return Failed(exc)
            conn.send(True)
    except (EOFError, OSError):
        return None  # the child died: reported as such by the caller
    return message if isinstance(message, (Done, Failed)) else None


def _answer(conn: Connection, *, go_on: bool) -> None:
    try:
        conn.send(go_on)
    except OSError:
        pass  # it died meanwhile: it stops anyway


def died(pid: int, status: int | None = None) -> CheckpointError:
    """The error of a save whose writer child died before committing."""
    how = "" if status is None else f" (wait status {status})"
    return CheckpointError(f"the background writer (pid {pid}) died{how} before "
                           "committing; the previous checkpoint is intact")


def reap(pid: int, *, clock: Clock, timeout_s: float | None = None) -> tuple[int, Any]:
    """Wait for a writer child, SIGKILLing it after ``timeout_s`` on ``clock``.

    Args:
        pid: the child.
        clock: the injected clock (a timed reap sleeps on it between looks).
        timeout_s: how long it may take to exit; ``None``: wait as long as it takes.

    Returns:
        Its wait status and resource usage; ``(-1, None)`` if it was reaped already.
    """
    deadline = None if timeout_s is None else clock.monotonic() + timeout_s
    try:
        while True:
            done, status, usage = os.wait4(pid, 0 if deadline is None else os.WNOHANG)
            if done:
                return status, usage
            assert deadline is not None
            if clock.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = None  # then wait for it to go
            else:
                clock.sleep(REAP_POLL_S)
    except ChildProcessError:  # already reaped (someone waited for every child)
        return -1, None
