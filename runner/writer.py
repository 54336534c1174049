"""The background writer: commits snapshots to local disk off the training thread.

Training blocks only to take the snapshot (:mod:`runner.snapshot`); serialising,
writing, fsync and the commit happen here, with at most one save in flight. Two
ways to write, chosen per save:

* **thread**: a daemon thread serialises a snapshot that was *copied* into host
  buffers. Cheap to start; right for small states, where a copy costs microseconds.
* **fork**: the training process forks and the child serialises the live tensors
  from its copy-on-write view of memory, as Redis does for background saves. The
  only stall is ``fork()`` itself (tens of milliseconds for gigabytes), not a copy;
  pages the parent modifies while the child writes are copied by the kernel, one
  page at a time, so memory grows by at most one snapshot. The child runs nothing
  but the commit, dies with its parent, and calls the fault hooks *through* the
  parent (a point's hook runs in the parent while the child waits), so a SIGKILL
  injected mid-save kills the training process as a runtime's death would.

Errors of a save are kept and raised at the next step (:meth:`Writer.raise_error`).
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobs.errors import CheckpointError
from runner.platform import die_with_parent
from runner.snapshot import FORK
from state.checkpoints import CheckpointStore, Manifest

THREAD = "thread"  # a copied snapshot, written by a thread; FORK: by a forked child

def fork_available() -> bool:
    """Whether this platform can fork a writer safely (Linux only: macOS forks badly)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


@dataclass
class SaveTask:
    """One save: a snapshot and where it sits in the loop.

    ``before_commit`` runs in the training process before the checkpoint can
    commit (to make the metrics it covers durable first); ``ready`` runs before
    serialising (to wait for asynchronous device-to-host copies).
    """

    payload: Mapping[str, Any]
    step: int
    epoch: int
    batch: int
    generation: int
    created_at: float
    meta: Mapping[str, Any]
    expected_bytes: int = 0
    ready: Callable[[], None] | None = None
    before_commit: Callable[[], None] | None = None


@dataclass
class WriteStats:
    """What one background write cost."""

    mode: str
    write_s: float = 0.0
    #: CPU seconds the write used (the thread's, or the child's)
    cpu_s: float = 0.0
    #: peak resident memory of a forked writer, in bytes (0 for a thread)
    child_max_rss: int = 0


Committed = Callable[[Manifest, WriteStats], None]
Hook = Callable[[str], None]


class Writer:
    """Commits :class:`SaveTask` s to ``local``, one at a time, in the background.

    Args:
        local: the local staging store.
        on_committed: told about each commit, from the writer's thread.
    """

    def __init__(self, local: CheckpointStore, *, on_committed: Committed) -> None:
        self.local = local
        self._on_committed = on_committed
        self._idle = threading.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._tasks: queue.SimpleQueue[SaveTask | None] = queue.SimpleQueue()
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

    def submit(self, task: SaveTask, *, mode: str) -> None:
        """Start writing ``task`` in the background (the caller waited for the last one).

        In ``fork`` mode the fork happens here, in the caller's thread: the child
        sees memory exactly as it is now.
        """
        assert not self.busy, "one save in flight at most: wait() first"
        self._idle.clear()
        try:
            if mode == FORK:
                pid, messages, acks = self._fork(task)
                threading.Thread(target=self._watch_child, name="colabrun-fork-writer",
                                 args=(pid, messages, acks, task.before_commit),
                                 daemon=True).start()
                return
            if self._thread is None:  # one thread for all the session's saves
                self._thread = threading.Thread(target=self._serve, name="colabrun-writer",
                                                daemon=True)
                self._thread.start()
            self._tasks.put(task)
        except BaseException:
            self._idle.set()
            raise

    # -- thread mode --------------------------------------------------------------

    def close(self) -> None:
        """End the writer thread once the save in flight (if any) is written."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(timeout=5.0)
            self._thread = None

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not None:
            self._write_in_thread(task)

    def _write_in_thread(self, task: SaveTask) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            if task.before_commit is not None:
                task.before_commit()
            if task.ready is not None:
                task.ready()
            manifest = _commit(self.local, task)
            stats = WriteStats(THREAD, time.monotonic() - started, time.thread_time() - cpu)
            self._on_committed(manifest, stats)
        except BaseException as exc:  # raised at the next step
            self.error = exc
        finally:
            self._idle.set()

    # -- fork mode ----------------------------------------------------------------

    def _fork(self, task: SaveTask) -> tuple[int, int, int]:
        message_read, message_write = os.pipe()  # the child reports, the parent reads
        ack_read, ack_write = os.pipe()  # the parent acknowledges, the child reads
        parent = os.getpid()
        with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock": the
            warnings.simplefilter("ignore", DeprecationWarning)  # child takes no lock
            pid = os.fork()
        if pid == 0:  # the child: commit, report, exit; never returns
            _child_main(self.local, task, parent, report=message_write, acks=ack_read)
        os.close(message_write)
        os.close(ack_read)
        return pid, message_read, ack_write

    def _watch_child(self, pid: int, messages: int, acks: int,
                     before_commit: Callable[[], None] | None) -> None:
        started = time.monotonic()
        try:
            manifest, error = self._converse(messages, acks, before_commit)
            status, usage = _reap(pid)
            if error is None and manifest is None:
                error = CheckpointError(
                    f"the background writer (pid {pid}) died (wait status {status}) before "
                    "committing; the previous checkpoint is intact")
            if error is not None:
                self.error = error
                return
            assert manifest is not None
            cpu_s = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
            rss = usage.ru_maxrss * 1024 if usage is not None else 0
            self._on_committed(manifest, WriteStats(FORK, time.monotonic() - started, cpu_s,
                                            child_max_rss=rss))
        except BaseException as exc:
            self.error = exc
        finally:
            self._idle.set()

    def _converse(self, messages: int, acks: int, before_commit: Callable[[], None] | None
                  ) -> tuple[Manifest | None, BaseException | None]:
        """Serve the child's points until it reports; closing our ends makes it exit."""
        manifest: Manifest | None = None
        error: BaseException | None = None
        with os.fdopen(messages, "rb") as inbox, os.fdopen(acks, "wb", buffering=0) as outbox:
            try:
                if before_commit is not None:  # the child waits for our first ack:
                    before_commit()  # it cannot commit before this ran
                for line in inbox:
                    kind, _, body = line.rstrip(b"\n").partition(b" ")
                    if kind == b"point":
                        try:
                            self.local.on_point(body.decode())
                        except BaseException as exc:
                            error = exc
                            break  # closing the pipes below aborts the child
                        outbox.write(b"ok\n")
                    elif kind == b"done":
                        manifest = Manifest.model_validate_json(body)
                    elif kind == b"error":
                        error = _unpickle_error(body)
            except BrokenPipeError:
                pass  # the child died: reported as such once it is reaped
            except BaseException as exc:
                error = error or exc
        return manifest, error


def _reap(pid: int) -> tuple[int, Any]:
    """Wait for a forked writer; its wait status and resource usage."""
    try:
        _, status, usage = os.wait4(pid, 0)
    except ChildProcessError:  # already reaped (someone waited for every child)
        return -1, None
    return status, usage


def _commit(local: CheckpointStore, task: SaveTask) -> Manifest:
    return local.commit(
        task.payload, step=task.step, epoch=task.epoch, batch=task.batch,
        generation=task.generation, created_at=task.created_at, meta=task.meta,
        expected_bytes=task.expected_bytes)


def _child_main(local: CheckpointStore, task: SaveTask, parent: int, *, report: int,
                acks: int) -> None:
    """The forked writer: commit ``task``, report to the parent, ``_exit``."""
    code = 1
    try:
        # Nothing inherited is collected here: the parent's garbage may hold storages
        # (a DataLoader's shared-memory batches) whose descriptors are closed below,
        # and torch aborts the process when it frees one of those.
        gc.freeze()
        die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)
        _close_fds_except(0, 1, 2, report, acks)
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the worker's
        # streams forward to the supervisor's socket, closed just above
        inbox = os.fdopen(acks, "rb")

        def send(kind: bytes, body: bytes = b"") -> None:
            os.write(report, kind + b" " + body.replace(b"\n", b" ") + b"\n")

        def through_parent(point: str) -> None:
            send(b"point", point.encode())
            if inbox.readline() != b"ok\n":  # an abort, or the parent is gone
                os._exit(1)

        local.on_point = through_parent
        manifest = _commit(local, task)
        send(b"done", manifest.model_dump_json().encode())
        code = 0
    except BaseException as exc:
        try:
            os.write(report, b"error " + _pickle_error(exc) + b"\n")
        except BaseException:
            pass
    finally:
        os._exit(code)


def _close_fds_except(*keep: int) -> None:
    """Close inherited descriptors (sockets to the supervisor, files) but ``keep``."""
    limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096
    previous = -1
    for fd in sorted(set(keep)) + [limit]:
        if fd > previous + 1:  # closerange(a, b) with b <= a closes EVERYTHING (CPython)
            os.closerange(previous + 1, fd)
        previous = fd


def _pickle_error(exc: BaseException) -> bytes:
    try:
        return pickle.dumps(exc).hex().encode()
    except Exception:
        return pickle.dumps(CheckpointError(f"background save failed: {exc!r}")).hex().encode()


def _unpickle_error(body: bytes) -> BaseException:
    try:
        error = pickle.loads(bytes.fromhex(body.decode()))
    except Exception:
        return CheckpointError(f"background save failed: {body[:200]!r}")
    return error if isinstance(error, BaseException) else CheckpointError(str(error))
