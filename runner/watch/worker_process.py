"""The supervisor's end of one worker: its process and its socket.

The worker is a fresh interpreter (``subprocess``, never ``fork``), in its own session so
that a terminal's Ctrl-C reaches only the supervisor, whose death it never outlives (its
first statements see to it: :func:`~colabrun.runner.platform.child_entry`), and its task
is cloudpickled so a training function defined in a notebook cell runs there too
(docs/concepts.md#supervisor-and-worker), its tracebacks naming the cell
(:mod:`~colabrun.runner.watch.task_pickle`). Messages both ways are those of
:mod:`colabrun.runner.watch.messages`. A worker that cannot import colabrun says so, as
a :class:`~colabrun.runner.watch.messages.NotStarted`, instead of dying as if it crashed;
and it imports with the working folder last (:mod:`~colabrun.runner.watch.worker_path`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import colabrun
from colabrun.runner.platform import child_entry
from colabrun.runner.watch.messages import (
    NOT_STARTED,
    NOT_STARTED_EXIT,
    NotStarted,
    SupervisorMessage,
    WorkerMessage,
)
from colabrun.runner.watch.task_pickle import dumps_task
from colabrun.runner.watch.worker import WorkerTask
from colabrun.runner.watch.worker_path import startup_path

#: how the worker starts, with the supervisor's pid, the socket's FD and the supervisor's
#: ``sys.path`` as arguments: it asks to die with the supervisor before it imports colabrun
#: (and torch: seconds during which a killed supervisor would leave it training). ``-c``
#: put the working folder first: it goes (:func:`startup_path` put it last). What an
#: import raises is sent, with builtins only, not printed to a stderr no notebook shows.
#: Not ``-m colabrun.runner.watch.worker``: runpy warns when the package it runs from
#: already imported the module.
WORKER_ENTRY = child_entry(f"""\
sys.path[:] = [entry for entry in sys.path if entry]
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[2]))
try:
    from colabrun.runner.watch.worker import worker_main
except BaseException as exc:
    import traceback
    conn.send(({NOT_STARTED!r}, "the worker process cannot import colabrun ("
               + type(exc).__name__ + ": " + str(exc) + ")", "",
               "".join(traceback.format_exception(exc)),
               (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""))
    os._exit({NOT_STARTED_EXIT})
worker_main(conn, parent=int(sys.argv[1]), path=sys.argv[3].split(os.pathsep))
""")
#: the folder ``import colabrun`` found it in: the worker's path keeps it in its place
HOME = str(Path(colabrun.__file__).parent.parent)
#: how long faulthandler gets to write the stacks (it writes from a signal handler, in C)
STACKS_WAIT_S = 1.0


class WorkerProcess:
    """A running worker, as the supervisor sees it.

    Args:
        process: the worker's process.
        conn: the supervisor's end of their socket.
    """

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        #: whether it was given its task (until then it only imports, then waits)
        self.tasked = False
        #: whether its socket was found closed: no message will come any more
        self.at_eof = False

    @classmethod
    def start(cls) -> WorkerProcess:
        """Start a worker without its task: it imports colabrun and torch (seconds), then
        waits for :meth:`give`. A session starts one before it takes the job's lease, so a
        fresh runtime's lease wait and state reads hide those seconds
        (docs/colab.md#a-fresh-runtime).

        Returns:
            The started worker.
        """
        ours, theirs = socket.socketpair()
        path = startup_path(sys.path, cwd=os.getcwd(), home=HOME)
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_ENTRY, str(os.getpid()), str(theirs.fileno()),
             os.pathsep.join(sys.path)],
            pass_fds=(theirs.fileno(),), start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        )
        theirs.close()
        return cls(process, Connection(ours.detach()))

    @classmethod
    def spawn(cls, task: WorkerTask) -> WorkerProcess:
        """Start a worker on ``task``.

        Args:
            task: everything the worker needs; cloudpickled across.

        Returns:
            The started worker.
        """
        return cls.start().give(task)

    def give(self, task: WorkerTask) -> WorkerProcess:
        """Send the worker its task (once); it trains from then on.

        Args:
            task: everything the worker needs; cloudpickled across.

        Returns:
            This worker. One that died meanwhile is left for its exit status (or its
            :class:`NotStarted`) to tell why.
        """
        self.tasked = True
        try:
            self.conn.send_bytes(dumps_task(task))
        except OSError:
            pass
        return self

    def discard(self) -> None:
        """Kill a worker that never got a task (the session ended before training) and
        reap it; one that got its task belongs to the supervisor."""
        if self.tasked:
            return
        self.kill()
        self.wait()
        self.close()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    @property
    def returncode(self) -> int:
        """The exit status (negative: killed by that signal); 0 while it runs."""
        return self.process.returncode or 0

    @property
    def did_not_start(self) -> bool:
        """Whether it exited because it could not import colabrun (it said why)."""
        return self.process.poll() == NOT_STARTED_EXIT

    def is_running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def send(self, message: SupervisorMessage) -> None:
        """Send a request; one to a worker that just died is dropped (its exit says more).

        Args:
            message: the request.
        """
        try:
            self.conn.send(message)
        except OSError:
            pass

    def receive(self, timeout: float) -> WorkerMessage | None:
        """The next message, waiting up to ``timeout`` seconds; ``None`` if none came (or
        the socket is closed: :attr:`at_eof`).

        Args:
            timeout: seconds to wait (0: only what is there already).
        """
        try:
            if not self.conn.poll(timeout):
                return None
            message: object = self.conn.recv()
        except (EOFError, OSError):
            self.at_eof = True
            return None
        if isinstance(message, tuple):  # from a worker that could not import colabrun
            return NotStarted.from_wire(message)
        return cast(WorkerMessage, message)

    def resume(self) -> None:
        """SIGCONT the worker (a stopped one runs its pending signal handlers first)."""
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the worker, if it still runs."""
        if self.is_running():
            self.process.kill()

    def wait(self) -> None:
        """Wait for the process to exit."""
        self.process.wait()

    def close(self) -> None:
        """Close the socket."""
        self.conn.close()

    def dump_stacks(self, stacks: Path, *, sleep: Callable[[float], None]) -> str | None:
        """Ask the worker for its thread stacks (SIGUSR2, ``faulthandler``) and read them.

        Args:
            stacks: the file the worker's faulthandler appends to.
            sleep: how to wait for it to write (the injected clock's).

        Returns:
            What it appended, or ``None`` when the worker is gone or wrote nothing readable.
        """
        offset = self.ask_for_stacks(stacks)
        if offset is None:
            return None
        sleep(STACKS_WAIT_S)
        return read_stacks(stacks, offset)

    def ask_for_stacks(self, stacks: Path) -> int | None:
        """Signal the worker to append its thread stacks to ``stacks`` (SIGUSR2); a group's
        workers are all asked before any is read (:func:`read_stacks`), to wait once.

        Args:
            stacks: the file the worker's faulthandler appends to.

        Returns:
            Where in ``stacks`` its dump begins, or ``None`` when the worker is gone.
        """
        offset = stacks.stat().st_size if stacks.exists() else 0
        try:
            os.kill(self.pid, signal.SIGUSR2)  # a stopped worker answers once continued
        except ProcessLookupError:
            return None
        return offset


def is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (a SIGSTOP, a debugger): state ``T`` or ``t``
    in ``/proc/PID/stat`` (Linux; elsewhere never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])


def read_stacks(stacks: Path, offset: int) -> str | None:
    """What a worker appended to ``stacks`` since ``offset`` (:meth:`WorkerProcess.ask_for_stacks`).

    Args:
        stacks: the file the worker's faulthandler appends to.
        offset: its size before the worker was asked.

    Returns:
        The stacks, or ``None`` when there is no such file.
    """
    if not stacks.exists():
        return None
    with open(stacks, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read().rstrip()
