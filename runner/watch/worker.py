"""The worker process: runs one training session for the supervisor.

Started by :class:`~colabrun.runner.watch.worker_process.WorkerProcess` as a fresh
interpreter calling :func:`worker_main` (never a ``fork``: the supervisor must not hand a
lock-holding image to the child, and unlike multiprocessing's spawn nothing re-runs the
user's ``__main__``), in its own session so that Ctrl-C reaches only the supervisor. It
talks to the supervisor over the socket FD in the messages of
:mod:`~colabrun.runner.watch.messages` and receives its task cloudpickled, so a
training function defined in a notebook cell works too; what the training raised goes
back as itself where it pickles (:mod:`~colabrun.runner.watch.remote_error`). A task that
does not load (a module the training function uses does not import here) is no crash: the
worker says why in a :class:`NotStarted` and exits.
It dies with its parent (Linux ``PR_SET_PDEATHSIG``, asked for by its entry before any
import, and a parent check every heartbeat), reports progress from a heartbeat thread,
forwards everything it prints through the pipe (a notebook shows only what the kernel
process prints), and dumps its thread stacks on SIGUSR2 (``faulthandler``, which works
even when a thread holds the GIL).

In a group of several processes (:class:`~colabrun.runner.dist.layout.Layout`) each is one
such worker; only the leader (process 0) keeps the job log and prints the status line,
and each dumps its stacks into its own file (:func:`stacks_name`).
"""

from __future__ import annotations

import faulthandler
import io
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TextIO, cast

import cloudpickle

from colabrun.jobs.imports import import_hint, working_folders
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock, SystemClock
from colabrun.runner.display.console import Console
from colabrun.runner.display.status import status_line
from colabrun.runner.dist.layout import Layout
from colabrun.runner.faults import hook_from_environment
from colabrun.runner.platform import ORPHANED_EXIT, die_with_parent
from colabrun.runner.train.live import Controls, LiveProgress
from colabrun.runner.train.training import SessionContext, train_session
from colabrun.runner.watch.deadline import Deadline
from colabrun.runner.watch.messages import (
    NOT_STARTED_EXIT,
    Beat,
    CheckpointRequest,
    Ended,
    NotStarted,
    Output,
    Pickled,
    StopRequest,
    SupervisorMessage,
    WorkerMessage,
    phase_of,
)
from colabrun.runner.watch.remote_error import report_error
from colabrun.runner.watch.restarts import Exit
from colabrun.runner.watch.worker_path import training_path
from colabrun.state.hooks import no_hook
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence

#: worker exit codes, read when no :class:`Ended` message arrived (another exit: 1)
EXIT_CODES = {Exit.COMPLETED: 0, Exit.STOPPED: 3, Exit.FAILED: 1, Exit.FENCED: 4, Exit.OOM: 17}
STACKS_NAME = "stacks.txt"


def stacks_name(process: int) -> str:
    """The file under the job's ``log/`` that process ``process`` dumps its thread stacks
    into: ``stacks.txt`` for the leader (or a process alone), ``stacks-p1.txt`` for
    process 1.

    Args:
        process: the process's index in its group.

    Returns:
        The file's name.
    """
    return STACKS_NAME if process == 0 else f"stacks-p{process}.txt"


@dataclass(frozen=True)
class WorkerTask:
    """Everything a worker needs, cloudpickled across the spawn."""

    spec: JobSpec
    root: Path
    fence: Fence
    session: int
    micro_batches: int
    deadline: Deadline
    search_path: tuple[Path, ...]
    attempt: int = 0
    #: the job's ranks, and this worker among the processes running them
    layout: Layout = Layout()
    #: host and port of the leader's c10d store, when the layout has several processes
    address: tuple[str, int] | None = None


class Channel:
    """A pipe end shared by threads: one message at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: WorkerMessage) -> None:
        """Send, ignoring a pipe the supervisor already closed.

        Args:
            message: what to tell the supervisor.
        """
        with self._lock:
            try:
                self.conn.send(message)
            except (BrokenPipeError, OSError):
                pass


class ForwardingStream(io.TextIOBase):
    """A text stream whose lines go to the supervisor, to be printed there."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer:
            complete, _, self._buffer = self._buffer.rpartition("\n")
            self.channel.send(Output(complete))
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.channel.send(Output(self._buffer))
            self._buffer = ""


class Heartbeat:
    """Daemon thread: reports progress, relays requests, prints the status line.

    Stopped by an Event whose ``wait(interval)`` is the sleep; each round is
    one :meth:`tick`. Problems are sent as data, never raised in the thread.
    """

    def __init__(self, channel: Channel, progress: LiveProgress, controls: Controls, *,
                 interval_s: float, status_every_s: float, clock: Clock,
                 console: Console, parent: int) -> None:
        self.channel = channel
        self.progress = progress
        self.controls = controls
        self.interval_s = interval_s
        self.status_every_s = status_every_s
        self.clock = clock
        self.console = console
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="colabrun-heartbeat", daemon=True)
        self._parent = parent
        self._last_status = clock.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        """One round: orphan check, requests in, progress out, maybe a status line."""
        if os.getppid() != self._parent:  # the supervisor is gone: no orphans
            os._exit(ORPHANED_EXIT)
        while self.channel.conn.poll():
            self._on_request(self.channel.conn.recv())
        p = self.progress
        self.channel.send(Beat(step=p.step, epoch=p.epoch, phase=phase_of(p.phase),
                               step_s=p.step_s, last_save=p.last_save, batch=p.batch,
                               batches_in_epoch=p.batches_in_epoch,
                               epochs_total=p.epochs_total, metrics=dict(p.metrics)))
        now = self.clock.monotonic()
        if now - self._last_status >= self.status_every_s:
            self._last_status = now
            self.console.info(status_line(p, deadline=self.controls.deadline,
                                          now=self.clock.time()))

    def _on_request(self, message: SupervisorMessage) -> None:
        if isinstance(message, StopRequest):
            self.controls.request_stop(message.reason)
        elif isinstance(message, CheckpointRequest):
            self.controls.request_checkpoint()


def worker_main(conn: Connection, *, parent: int, path: Sequence[str] = ()) -> None:
    """Entry point of the worker process.

    Args:
        conn: its end of the socket to the supervisor.
        parent: the supervisor's pid (this process exits at once when its parent is another).
        path: the supervisor's ``sys.path``, the user's code is loaded with
            (:func:`~colabrun.runner.watch.worker_path.training_path`).
    """
    die_with_parent(parent)  # done already by WORKER_ENTRY: here for any other caller
    if path:
        sys.path[:] = training_path(path, sys.path)
    import_ahead()
    try:
        blob = conn.recv_bytes()
    except EOFError:  # started ahead, and the session ended before training
        os._exit(0)
    task = _load_task(conn, blob)
    channel = Channel(conn)
    sys.stdout = sys.stderr = ForwardingStream(channel)
    progress = LiveProgress(micro_batches=task.micro_batches)
    layout = task.layout
    hook = hook_from_environment(task.attempt, progress=progress, process=layout.process)
    job = JobDir(task.root, task.spec.name, on_point=hook or no_hook,
                 local_root=Path(task.spec.local_dir) if task.spec.local_dir else None)
    console = Console(out=cast(TextIO, sys.stdout), storage=job.storage)
    if layout.is_leader:  # the others' lines reach the supervisor, prefixed, unlogged
        console.attach_log(job.path)
    job.storage.makedirs(job.path / "log")
    stacks_file = job.path / "log" / stacks_name(layout.process)
    stacks = open(stacks_file, "a")  # noqa: SIM115 - lives as long as we do
    faulthandler.register(signal.SIGUSR2, file=stacks, all_threads=True)
    clock = SystemClock()
    controls = Controls(task.deadline)
    status_every_s = task.spec.watchdog.status_every_s if layout.is_leader else float("inf")
    beat = Heartbeat(channel, progress, controls, interval_s=task.spec.watchdog.heartbeat_s,
                     status_every_s=status_every_s, clock=clock, console=console,
                     parent=parent)
    beat.start()
    ctx = SessionContext(job=job, fence=task.fence, session=task.session,
                         clock=clock, console=console, on_point=job.statefile.on_point,
                         controls=controls, progress=progress, micro_batches=task.micro_batches,
                         search_path=task.search_path, layout=layout, address=task.address)
    outcome = train_session(task.spec, ctx)
    beat.stop()
    sys.stdout.flush()
    channel.send(Ended(exit=outcome.exit, detail=outcome.detail, exit_code=outcome.exit_code,
                       micro_batches=progress.micro_batches, value=Pickled.of(outcome.value),
                       error=None if outcome.error is None else report_error(outcome.error)))
    conn.close()
    os._exit(EXIT_CODES.get(outcome.exit, 1))  # skip atexit: nothing of ours is left to flush


def import_ahead() -> None:
    """Import now what the training's first optimizer imports (``torch._dynamo``, through
    ``torch._compile``: 1.1-1.2 s measured on the project's 2-core machine): a worker started
    ahead does it while the supervisor takes the lease, not after (docs/colab.md#a-fresh-runtime).
    Where it fails to import, the optimizer will say why."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: S110 - an optional head start
        pass


def _load_task(conn: Connection, blob: bytes) -> WorkerTask:
    """The task; if it does not load, tell the supervisor why, and exit."""
    try:
        task: WorkerTask = cloudpickle.loads(blob)
    except Exception as exc:  # a module the training function uses does not import here
        conn.send(NotStarted(
            f"the worker cannot load the training function ({type(exc).__name__}: {exc})",
            hint=import_hint(exc, folders=working_folders()),
            traceback="".join(traceback.format_exception(exc)),
            missing=exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else ""))
        conn.close()
        os._exit(NOT_STARTED_EXIT)
    return task
