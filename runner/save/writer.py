"""The background writer: commits snapshots to local disk off the training thread.

Training blocks only to take the snapshot (:mod:`colabrun.runner.save.snapshot`); serialising,
writing and the commit happen here, with at most one save in flight. Three ways
to write, chosen per save:

* **process** (a copied snapshot, Linux): one long-lived forked child per
  session serialises snapshots that were copied into *shared* host buffers
  (:class:`~colabrun.runner.save.snapshot.HostBuffers` with ``shared=True``). Each save sends
  it a few hundred bytes (the snapshot's structure, its tensors by reference),
  and the child does the pickling, hashing and writing: Python work that, in a
  thread, holds the GIL beside training (a 2-core machine measured 3 ms of extra
  step time per save of a 0.3 MB state). A new child is forked only when the
  buffers change (the first save, a new tensor shape).
* **thread**: a daemon thread serialises a copied snapshot. Where fork is not
  safe (macOS, Windows), and for snapshots of CUDA tensors (pinned buffers).
* **fork**: the training process forks and the child serialises the live tensors
  from its copy-on-write view of memory, as Redis does for background saves. The
  only stall is ``fork()`` itself (tens of milliseconds for gigabytes), not a copy;
  pages the parent modifies while the child writes are copied by the kernel, one
  page at a time, so memory grows by at most one snapshot.

A child runs nothing but commits, dies with its parent, and calls the fault hooks
*through* the parent (a point's hook runs in the parent while the child waits),
so a SIGKILL injected mid-save kills the training process as a runtime's death
would. Errors of a save are kept and raised at the next step
(:meth:`Writer.raise_error`).
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

import torch

from colabrun.jobs.errors import CheckpointError
from colabrun.runner.platform import die_with_parent
from colabrun.runner.save.snapshot import FORK, FORK_MIN_BYTES, HostBuffers
from colabrun.state.checkpoints import CheckpointStore, Manifest
from colabrun.state.hooks import no_hook

THREAD = "thread"  # a copied snapshot, written by a thread
PROCESS = "process"  # a snapshot in shared buffers, written by a long-lived child
# FORK (from colabrun.runner.save.snapshot): live tensors, written by a child forked for the save

def fork_available() -> bool:
    """Whether this platform can fork a writer safely (Linux only: macOS forks badly)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


#: the largest state a writer process serialises. It keeps the pages training changes
#: after its fork (the tensors, mostly: ~15 MiB more than the state for the digits job,
#: measured), so bigger copied states are written by a thread.
PROCESS_MAX_BYTES = FORK_MIN_BYTES


def writer_mode(snapshot: str, *, on_cuda: bool, nbytes: int, buffers: HostBuffers) -> str:
    """How a save whose snapshot was taken as ``snapshot`` is written (a pure decision):
    live tensors by a forked child; copies in shared buffers by the writer process
    (states under :data:`PROCESS_MAX_BYTES`); other copies (CUDA sources, pinned
    buffers; no fork; big states) by a thread."""
    if snapshot == FORK:
        return FORK
    if buffers.shared and not on_cuda and nbytes < PROCESS_MAX_BYTES:
        return PROCESS
    return THREAD


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
    #: where the snapshot's tensors live (``process`` mode: shared buffers)
    buffers: HostBuffers | None = None
    #: ``fork`` mode: parameters whose gradients the child lets go of at once
    #: (see :func:`_release_gradients`)
    gradients_of: Sequence[torch.Tensor] = ()


@dataclass
class WriteStats:
    """What one background write cost."""

    mode: str
    write_s: float = 0.0
    #: CPU seconds the write used (the thread's, or the child's)
    cpu_s: float = 0.0
    #: peak resident memory of a writer forked for the save, in bytes (``fork`` mode only)
    child_max_rss: int = 0


Committed = Callable[[Manifest, WriteStats], None]


class Writer:
    """Commits :class:`SaveTask` s to ``local``, one at a time, in the background,
    and after each commit removes all but the ``keep`` newest local checkpoints.

    Args:
        local: the local staging store.
        on_committed: told about each commit, from the writer's thread.
        keep: local checkpoints kept, the new one included.
        protected: the name of a local checkpoint never to remove now (the one
            being uploaded), asked before each save is written.
    """

    def __init__(self, local: CheckpointStore, *, on_committed: Committed, keep: int = 2,
                 protected: Callable[[], str | None] = lambda: None) -> None:
        self.local = local
        self._on_committed = on_committed
        self.keep = keep
        self._protected = protected
        self._idle = threading.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._tasks: queue.SimpleQueue[tuple[SaveTask, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._child: _Child | None = None

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

        Returns:
            Whether a writer process was started for this and later saves.
        """
        assert not self.busy, "one save in flight at most: wait() first"
        self._idle.clear()
        try:
            if mode == FORK:
                pid, messages, acks = self._fork(task)
                threading.Thread(target=self._watch_child, name="colabrun-fork-writer",
                                 args=(pid, messages, acks, task.before_commit),
                                 daemon=True).start()
                return False
            started = False
            if mode == PROCESS:
                assert task.buffers is not None and task.buffers.shared, "shared buffers"
                if self._child is None or not self._child.serves(task.buffers):
                    self._end_child()  # outdated buffers, or it died (the OOM killer)
                    self._child = _Child(self.local, task.buffers)
                    started = True
            if self._thread is None:  # one thread for all the session's saves
                self._thread = threading.Thread(target=self._serve, name="colabrun-writer",
                                                daemon=True)
                self._thread.start()
            self._tasks.put((task, mode))
            return started
        except BaseException:
            self._idle.set()
            raise

    def close(self) -> None:
        """End the writer thread and child once the save in flight (if any) is written."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(timeout=5.0)
            self._thread = None
        self._end_child()

    def _serve(self) -> None:
        while (item := self._tasks.get()) is not None:
            task, mode = item
            started = time.monotonic()
            try:
                if task.before_commit is not None:
                    task.before_commit()
                if task.ready is not None:
                    task.ready()
                if mode == PROCESS:
                    manifest, stats = self._write_in_child(task)
                else:
                    cpu = time.thread_time()
                    manifest = _commit(self.local, task, self.keep, self._protected())
                    stats = WriteStats(THREAD, cpu_s=time.thread_time() - cpu)
                stats.write_s = time.monotonic() - started
                self._on_committed(manifest, stats)
            except BaseException as exc:  # raised at the next step
                self.error = exc
            finally:
                self._idle.set()

    # -- process mode -------------------------------------------------------------

    def _write_in_child(self, task: SaveTask) -> tuple[Manifest, WriteStats]:
        child = self._child
        assert child is not None
        try:
            child.send(task, routed=self.local.on_point is not no_hook, keep=self.keep,
                       protected=self._protected())
        except OSError:
            pass  # it died: said below, once its report ends
        manifest, error, cpu_s = _converse(child.inbox, child.outbox, self.local.on_point)
        if manifest is None:
            self._end_child()  # it died, or was aborted at a point; the next save forks anew
            if error is None:
                error = CheckpointError(
                    f"the background writer (pid {child.pid}) died before committing; "
                    "the previous checkpoint is intact")
        if error is not None:
            raise error
        assert manifest is not None
        return manifest, WriteStats(PROCESS, cpu_s=cpu_s)

    def _end_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.end()

    # -- fork mode ----------------------------------------------------------------

    def _fork(self, task: SaveTask) -> tuple[int, int, int]:
        message_read, message_write = os.pipe()  # the child reports, the parent reads
        ack_read, ack_write = os.pipe()  # the parent acknowledges, the child reads
        parent = os.getpid()
        pid = _fork()
        if pid == 0:  # the child: commit, report, exit; never returns
            _child_main(self.local, task, parent, report=message_write, acks=ack_read,
                        keep=self.keep, protected=self._protected())
        os.close(message_write)
        os.close(ack_read)
        return pid, message_read, ack_write

    def _watch_child(self, pid: int, messages: int, acks: int,
                     before_commit: Callable[[], None] | None) -> None:
        started = time.monotonic()
        try:
            with os.fdopen(messages, "rb") as inbox, \
                    os.fdopen(acks, "wb", buffering=0) as outbox:
                manifest, error = None, None
                try:
                    if before_commit is not None:  # the child waits for our first ack:
                        before_commit()  # it cannot commit before this ran
                except BaseException as exc:
                    error = exc  # closing the pipes aborts the child
                if error is None:
                    manifest, error, _ = _converse(inbox, outbox, self.local.on_point)
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


def _converse(inbox: IO[bytes], outbox: IO[bytes], on_point: Callable[[str], None]
              ) -> tuple[Manifest | None, BaseException | None, float]:
    """Serve a child's points until it reports a save: its manifest, or its error, and
    its CPU seconds. ``(None, None, 0)`` when it died. A hook that raises is the
    save's error; the child is told to abort."""
    try:
        for line in inbox:
            kind, _, body = line.rstrip(b"\n").partition(b" ")
            if kind == b"point":
                try:
                    on_point(body.decode())
                except BaseException as exc:
                    outbox.write(b"abort\n")
                    return None, exc, 0.0
                outbox.write(b"ok\n")
            elif kind == b"done":
                cpu, _, manifest = body.partition(b" ")
                return Manifest.model_validate_json(manifest), None, float(cpu)
            elif kind == b"error":
                return None, _unpickle_error(body), 0.0
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child died: reported as such by the caller
    return None, None, 0.0


def _fork() -> int:
    with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock": the
        warnings.simplefilter("ignore", DeprecationWarning)  # child takes no lock
        return os.fork()


def _reap(pid: int, *, timeout_s: float | None = None) -> tuple[int, Any]:
    """Wait for a forked writer (SIGKILL it after ``timeout_s``); its wait status and
    resource usage."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            flags = 0 if deadline is None else os.WNOHANG
            done, status, usage = os.wait4(pid, flags)
            if done:
                return status, usage
            if deadline is not None and time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = None
            else:
                time.sleep(0.005)
    except ChildProcessError:  # already reaped (someone waited for every child)
        return -1, None


def _commit(local: CheckpointStore, task: SaveTask, keep: int, protected: str | None
            ) -> Manifest:
    manifest = local.commit(
        task.payload, step=task.step, epoch=task.epoch, batch=task.batch,
        generation=task.generation, created_at=task.created_at, meta=task.meta,
        expected_bytes=task.expected_bytes)
    _rotate(local, keep, protected)
    return manifest


def _rotate(local: CheckpointStore, keep: int, protected: str | None) -> None:
    """Remove all but the ``keep`` newest local checkpoints, and ``protected``."""
    for name in sorted(local.list_names())[:-keep]:
        if name != protected:
            local.discard(name)


class _Report:
    """A child's side of the conversation: reports on one pipe, acks on another."""

    def __init__(self, report: int, acks: int) -> None:
        self._report = report
        self._acks = os.fdopen(acks, "rb")

    def send(self, kind: bytes, body: bytes = b"") -> None:
        os.write(self._report, kind + b" " + body.replace(b"\n", b" ") + b"\n")

    def done(self, manifest: Manifest, cpu_s: float) -> None:
        """A save committed, with the CPU seconds it took (read by :func:`_converse`)."""
        self.send(b"done", f"{cpu_s:.6f} ".encode() + manifest.model_dump_json().encode())

    def through_parent(self, point: str) -> None:
        """A save point's hook, run by the parent while this child waits."""
        self.send(b"point", point.encode())
        if self._acks.readline() != b"ok\n":  # an abort, or the parent is gone
            os._exit(1)

    def error(self, exc: BaseException) -> None:
        try:
            os.write(self._report, b"error " + _pickle_error(exc) + b"\n")
        except BaseException:
            pass


def _become_writer(parent: int, *keep: int) -> None:
    """In a freshly forked child: nothing inherited is ever collected, die with the
    parent, keep only ``keep`` (and the standard) descriptors, quiet streams."""
    # The parent's garbage may hold storages (a DataLoader's shared-memory batches)
    # whose descriptors are closed below; torch aborts the process freeing one.
    gc.freeze()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    _close_fds_except(0, 1, 2, *keep)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the worker's
    # streams forward to the supervisor's socket, closed just above


def _release_gradients(params: Iterable[torch.Tensor]) -> None:
    """In a forked writer: drop the inherited gradients, which no checkpoint holds.

    The parent frees its gradients at its next ``zero_grad()`` and allocates new
    ones in the next backward; pages the child still maps would stay allocated
    until the child ends, one model's worth of memory more. Measured on the
    benchmark's 0.8 GB state (256 MiB of gradients): peak 2507 MiB without this,
    2267 MiB with it. Freed here, large ones are unmapped at once.
    """
    for param in params:
        param.grad = None


def _child_main(local: CheckpointStore, task: SaveTask, parent: int, *, report: int,
                acks: int, keep: int, protected: str | None) -> None:
    """The writer forked for one save: commit ``task``, report to the parent, ``_exit``."""
    code = 1
    reporter: _Report | None = None
    try:
        _become_writer(parent, report, acks)
        _release_gradients(task.gradients_of)
        reporter = _Report(report, acks)
        local.on_point = reporter.through_parent
        cpu = time.process_time()
        manifest = _commit(local, task, keep, protected)
        reporter.done(manifest, time.process_time() - cpu)
        code = 0
    except BaseException as exc:
        if reporter is not None:
            reporter.error(exc)
    finally:
        os._exit(code)


# -- the long-lived writer process ---------------------------------------------------

#: in a writer process: the buffers its tasks' tensors refer to
_CHILD_BUFFERS: HostBuffers | None = None


def _shared_buffer(key: Any) -> torch.Tensor:
    """Unpickled in a writer process: its view of one of the parent's shared buffers."""
    assert _CHILD_BUFFERS is not None
    return _CHILD_BUFFERS.buffer(key)


class _TaskPickler(pickle.Pickler):
    """Pickles a task with its shared buffers by reference (the child maps them too)."""

    def __init__(self, file: IO[bytes], buffers: HostBuffers) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._buffers = buffers

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            key = self._buffers.key_of(obj)
            if key is not None:
                return _shared_buffer, (key,)
        return NotImplemented


class _Child:
    """A writer process forked with ``buffers`` mapped: commits the tasks it is sent."""

    def __init__(self, local: CheckpointStore, buffers: HostBuffers) -> None:
        self.layout = buffers.layout
        self._buffers = buffers
        task_read, task_write = os.pipe()
        message_read, message_write = os.pipe()
        ack_read, ack_write = os.pipe()
        parent = os.getpid()
        pid = _fork()
        if pid == 0:  # never returns
            _process_main(local, buffers, parent, tasks=task_read,
                          report=message_write, acks=ack_read)
        for fd in (task_read, message_write, ack_read):
            os.close(fd)
        self.pid = pid
        self._reaped = False
        self._tasks = os.fdopen(task_write, "wb")
        self.inbox = os.fdopen(message_read, "rb")
        self.outbox = os.fdopen(ack_write, "wb", buffering=0)

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

    def send(self, task: SaveTask, *, routed: bool, keep: int, protected: str | None) -> None:
        """Hand a task over; ``routed``: pass its points to the parent's hook."""
        data = io.BytesIO()
        bare = replace(task, ready=None, before_commit=None, buffers=None)  # data only
        _TaskPickler(data, self._buffers).dump((bare, routed, keep, protected))
        self._tasks.write(struct.pack("<Q", data.tell()) + data.getbuffer())
        self._tasks.flush()

    def end(self) -> None:
        """Close its task pipe (it exits after the task in hand), and reap it."""
        for file in (self._tasks, self.inbox, self.outbox):
            try:
                file.close()
            except OSError:
                pass
        if not self._reaped:
            _reap(self.pid, timeout_s=5.0)
            self._reaped = True


def _process_main(local: CheckpointStore, buffers: HostBuffers, parent: int, *, tasks: int,
                  report: int, acks: int) -> None:
    """A writer process: commit each task it reads, report each; ``_exit`` at EOF."""
    global _CHILD_BUFFERS
    code = 1
    try:
        _become_writer(parent, tasks, report, acks)
        _CHILD_BUFFERS = buffers
        reporter = _Report(report, acks)
        source = os.fdopen(tasks, "rb")
        while len(header := source.read(8)) == 8:
            (size,) = struct.unpack("<Q", header)
            task, routed, keep, protected = pickle.loads(source.read(size))
            local.on_point = reporter.through_parent if routed else no_hook
            cpu = time.process_time()
            try:
                manifest = _commit(local, task, keep, protected)
            except Exception as exc:  # this save failed; the next one may not
                reporter.error(exc)
                continue
            finally:
                del task
            reporter.done(manifest, time.process_time() - cpu)
        code = 0
    except BaseException:
        pass  # the parent sees the pipe close, and reports the death
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
