"""One simulated runtime: a command in its own mount, UTS and PID namespaces.

On Colab a runtime is a VM. When it dies, every process on it dies at once and its local
disk dies with it: ``/tmp``, where colabrun stages checkpoints before their upload to the
root. A fresh runtime has a new host name (so a new :func:`~colabrun.runner.platform.runtime_id`)
and an empty ``/tmp``. :class:`Runtime` simulates that on one Linux machine, as root, with
``unshare``::

    with Runtime(["colabrun", "run", "spec.yaml", "--root", str(root)], shared=[root]) as rt:
        rt.wait_for(r"saved", timeout=120)
        rt.kill()                      # every process of it dies; its /tmp is gone

What a runtime sees:

- ``/tmp``: a fresh, empty tmpfs, its own, gone when it ends. Host folders under ``/tmp``
  (pytest's ``tmp_path`` is one) are hidden, except the ``shared`` ones, bound back in.
- everything else of the host as it is (``/run``, ``/dev/shm``, ``/var/tmp``, the home folder,
  site-packages, the network, the GPU): a real VM's death would lose some of that too.
- its own ``/proc``, which lists its own processes only, and its own host name.

How it is built: :mod:`colabrun.runner.sim.launch` (the setup, ``unshare``, the handshake);
:mod:`colabrun.runner.sim.folders` (which folders it shares); :mod:`colabrun.runner.sim.procfs`
(its processes).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from colabrun.runner.sim.folders import python_folders, requested_folders, visible_folders
from colabrun.runner.sim.launch import (
    KILL_TIMEOUT_S,
    SETUP_NAME,
    STASH_PARENTS,
    Launch,
    read_log,
    refusal,
    tail,
)
from colabrun.runner.sim.procfs import namespace_pids, send, stop_all

# the names imported from here, some of them defined in launch.py (tests use the setup's
# names; the docstrings below cite KILL_TIMEOUT_S)
__all__ = ["FREEZE_TIMEOUT_S", "HOSTNAME", "KILL_TIMEOUT_S", "POLL_S", "Runtime", "SETUP_NAME",
           "STASH_PARENTS", "refusal"]

#: Upper bound on :meth:`Runtime.freeze` (a process stuck in the kernel stops on leaving it).
FREEZE_TIMEOUT_S = 10.0
#: How often :meth:`Runtime.wait_for` reads the log.
POLL_S = 0.05
#: A host name: letters, digits, '-' and '.', at most 64 characters (the kernel's limit).
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")


def host_name(hostname: str | None) -> str:
    """``hostname`` checked, or a new one (``rt-`` and 8 random hex digits).

    Raises:
        ValueError: it is not a host name.
    """
    name = hostname if hostname is not None else f"rt-{secrets.token_hex(4)}"
    if not HOSTNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name: use 1-64 letters, "
                         "digits, '-' or '.', starting with a letter or digit")
    return name


def temporary_log() -> Path:
    """A new, empty temporary file of the host, for a runtime's log."""
    handle, name = tempfile.mkstemp(prefix=f"{SETUP_NAME}-", suffix=".log")
    os.close(handle)
    return Path(name)


class Runtime:
    """A simulated Colab runtime running one command (see the module's docstring).

    The command is ``exec``'d as the PID namespace's first process, pid 1, so:

    - when it exits, the runtime ends: the kernel SIGKILLs every process left in it;
    - signals it installs no handler for are ignored, except SIGKILL and SIGSTOP sent from
      the host: a SIGTERM or SIGINT kills it only if it handles that signal (colabrun does;
      ``sleep`` or a plain ``sh`` does not);
    - orphaned processes of the runtime become its children; one that never waits for
      them leaves zombies until the runtime ends.

    Use it as a context manager (``__enter__`` starts it, ``__exit__`` kills it if still
    alive), or call :meth:`start` and later :meth:`kill` or :meth:`wait`: a runtime that is
    never ended is killed when this object is collected, or at interpreter exit.

    Attributes:
        argv: the command.
        hostname: the runtime's host name.
        cwd: the folder the command starts in.
        log: the host file that receives the command's stdout and stderr.
        shared: every host folder the runtime sees, the automatic ones included.
    """

    def __init__(self, argv: Sequence[str], *, shared: Sequence[Path] = (),
                 cwd: Path | None = None, env: Mapping[str, str] | None = None,
                 hostname: str | None = None, log: Path | None = None,
                 share_python: bool = True) -> None:
        """Describe a runtime; :meth:`start` starts it.

        Args:
            argv: the command the runtime runs (``argv[0]`` found through ``env``'s
                ``PATH``); the runtime ends when it exits.
            shared: host folders that must stay visible inside, e.g. the root shared by
                every runtime. Folders outside ``/tmp`` are visible anyway; those under it
                are bound into the fresh ``/tmp`` (so a shared ``tmp_path`` is the host's).
                Relative paths are taken from this process's working folder; a missing
                folder is created at :meth:`start`. ``/tmp`` itself, or a folder holding it,
                cannot be shared: that would keep the host's ``/tmp``.
            share_python: also share the folders this Python imports from that lie under
                ``/tmp`` (a clone or a virtual environment there), so colabrun imports inside.
            cwd: the folder the command starts in (default: this process's); shared
                automatically, unless it is ``/tmp`` itself (then it is the fresh one).
            env: the command's environment (default: ``os.environ`` as it is now). A
                ``TMPDIR`` outside ``/tmp`` in it moves colabrun's local staging off the
                runtime's disk.
            hostname: the runtime's host name (default ``rt-`` and 8 random hex digits).
            log: the host file for stdout and stderr, created or emptied at :meth:`start`;
                its folder is shared automatically (unless it is ``/tmp`` itself). Default:
                a new temporary file of the host, removed with this object.

        Raises:
            ValueError: an empty ``argv``, an invalid host name, or a shared folder that is
                ``/tmp`` or holds it, or is an existing file.
        """
        if not argv:
            raise ValueError("a runtime needs a command: argv is empty")
        self.argv: list[str] = [os.fspath(arg) for arg in argv]
        self.hostname: str = host_name(hostname)
        self.cwd: Path = (cwd if cwd is not None else Path.cwd()).resolve()
        self._env = dict(os.environ if env is None else env)
        self._create = requested_folders(shared)
        automatic = [self.cwd]
        if log is not None:
            self.log: Path = Path(log).resolve()
            automatic.append(self.log.parent)
        else:
            self.log = temporary_log()
            weakref.finalize(self, self.log.unlink, missing_ok=True)
        if share_python:
            automatic += python_folders()
        self.shared: tuple[Path, ...] = visible_folders(self._create, automatic)
        self._launch: Launch | None = None

    def __repr__(self) -> str:
        launch = self._launch
        state = ("not started" if launch is None
                 else "alive" if launch.alive() else f"ended ({launch.status()})")
        return f"Runtime({self.argv!r}, hostname={self.hostname!r}, {state})"

    # -- life -------------------------------------------------------------------------

    def start(self) -> Runtime:
        """Start the runtime; returns once its command has been ``exec``'d.

        Returns:
            this runtime.

        Raises:
            RuntimeError: started before, this machine cannot simulate a runtime
                (:func:`refusal`), or the setup failed (the message quotes it).
        """
        if self._launch is not None:
            raise RuntimeError(f"{self!r} was started already")
        reason = refusal()
        if reason is not None:
            raise RuntimeError(f"cannot simulate a runtime here: {reason}")
        for folder in self._create:
            folder.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        self._launch = Launch(self.argv, hostname=self.hostname, cwd=self.cwd, log=self.log,
                              shared=self.shared, env=self._env)
        try:
            self._launch.handshake()
        except BaseException:
            self.kill()
            raise
        weakref.finalize(self, self._launch.abandon)  # holds the launch, not this object
        return self

    def __enter__(self) -> Runtime:
        """Start the runtime unless started already."""
        if self._launch is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Kill the runtime if it is still alive."""
        self.kill()

    @property
    def pid(self) -> int:
        """The host pid of the runtime's pid 1: the command itself.

        Raises:
            RuntimeError: not started.
        """
        if self._launch is None or self._launch.pid is None:
            raise RuntimeError(f"{self!r} has no pid: start it first")
        return self._launch.pid

    def alive(self) -> bool:
        """Whether the runtime still runs (started, and its command not yet ended)."""
        return self._launch is not None and self._launch.alive()

    def kill(self) -> None:
        """The VM dies: SIGKILL pid 1, so the kernel kills every process of the runtime,
        and wait until they are gone. Does nothing more on a runtime already ended or
        never started.

        Raises:
            subprocess.TimeoutExpired: the runtime did not end within
                :data:`KILL_TIMEOUT_S` (a process stuck in the kernel).
        """
        if self._launch is not None:
            self._launch.kill()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to end.

        Args:
            timeout: seconds to wait at most (``None``: for ever).

        Returns:
            its exit status as ``unshare`` reports it: the command's exit code, or minus the
            signal that killed it (``-9`` after :meth:`kill`: ``unshare`` exits 1 for a
            SIGKILLed command, and says why, which this maps back to ``-9``).

        Raises:
            RuntimeError: not started.
            subprocess.TimeoutExpired: it still runs after ``timeout``.
        """
        if self._launch is None:
            raise RuntimeError(f"{self!r} was never started")
        return self._launch.wait(timeout)

    # -- its processes ----------------------------------------------------------------

    def processes(self) -> list[int]:
        """The host pids of every process still in the runtime's PID namespace."""
        if self._launch is None or self._launch.namespace is None:
            return []
        return namespace_pids(self._launch.namespace)

    def freeze(self) -> None:
        """SIGSTOP every process of the runtime (a frozen owner), until each is stopped.

        Raises:
            TimeoutError: some process was still not stopped after :data:`FREEZE_TIMEOUT_S`.
        """
        running = stop_all(self.processes, timeout_s=FREEZE_TIMEOUT_S)
        if running:
            raise TimeoutError(f"processes {running} of {self!r} did not stop")

    def thaw(self) -> None:
        """SIGCONT every process of the runtime: a frozen owner alive again."""
        for pid in self.processes():
            send(pid, signal.SIGCONT)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to pid 1, the command (nothing once the runtime has ended).

        As pid 1 of its namespace the command ignores every signal it installs no handler
        for, SIGKILL and SIGSTOP excepted (see the class's docstring).

        Args:
            sig: the signal's number, e.g. ``signal.SIGTERM``.
        """
        if self._launch is not None and self._launch.alive():
            self._launch.signal_pid1(sig)

    # -- its log ----------------------------------------------------------------------

    def output(self) -> str:
        """What the runtime wrote to its log so far (stdout and stderr, the setup's too)."""
        return read_log(self.log)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read the log every :data:`POLL_S` seconds until ``pattern`` matches.

        Args:
            pattern: a regular expression, searched in the whole log (``^`` and ``$`` match
                at each line).
            timeout: seconds to wait at most.

        Returns:
            the first match.

        Raises:
            TimeoutError: no match within ``timeout``; the message quotes the log's end.
            RuntimeError: the runtime ended (or was never started) without a match.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            ended = not self.alive()  # read the log after: the last lines count
            text = self.output()
            match = regex.search(text)
            if match is not None:
                return match
            if ended:
                how = ("was never started" if self._launch is None
                       else f"ended (status {self._launch.status()})")
                raise RuntimeError(f"runtime {self.hostname} {how} before its log matched "
                                   f"{pattern!r}; its log ({self.log}) ends with:\n"
                                   f"{tail(text)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"runtime {self.hostname}'s log did not match {pattern!r} "
                                   f"within {timeout:g} s; it ({self.log}) ends with:\n"
                                   f"{tail(text)}")
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
