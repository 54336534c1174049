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

How it is built: ``unshare --mount --uts --pid --fork --kill-child --mount-proc`` runs a small
``sh`` script as the new PID namespace's first process. Inside the new mount namespace (its
mounts private, so the host never sees one) the script binds the host's ``/tmp`` on a
*stash* folder outside it (under ``/run``, else ``/dev/shm``), mounts the tmpfs on ``/tmp``,
binds each shared folder under ``/tmp`` back from the stash, unmounts the stash, sets the host
name, reports ready on one pipe (its stdout), waits for the go-ahead on another (its stdin:
so this process learns the pid first), and ``exec``\\ s the command, stdin from ``/dev/null``,
stdout and stderr to the log: the command *is* the namespace's pid 1. Every argument reaches
the script as a positional parameter, never as shell text.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

#: The runtime's local disk: replaced by a fresh tmpfs in each runtime.
TMP = Path("/tmp")
#: Where the host's /tmp is stashed while a runtime is set up: the first of these that is a
#: writable folder outside /tmp.
STASH_PARENTS = (Path("/run"), Path("/dev/shm"))
#: Where the setup finds ``mount``, ``umount`` and ``mkdir`` whatever the runtime's ``PATH``.
TOOLS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The shell the setup runs in; it ``exec``\ s the command.
SHELL = "/bin/sh"
#: ``$0`` of the setup script, and the source name of the runtime's tmpfs (in its mountinfo).
SETUP_NAME = "colabrun-runtime"
#: The namespaces, and the runtime's death when ``unshare`` itself is killed.
UNSHARE_OPTIONS = ("--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
                   "--propagation", "private")
#: Upper bound on the setup (mounts, host name) and on the ``exec`` of the command.
SETUP_TIMEOUT_S = 30.0
#: Upper bound on :meth:`Runtime.freeze` (a process stuck in the kernel stops on leaving it).
FREEZE_TIMEOUT_S = 10.0
#: Upper bound on the end of a killed runtime (a process stuck in the kernel delays it).
KILL_TIMEOUT_S = 60.0
#: What ``unshare`` (util-linux 2.38) says when its child was SIGKILLed: it then exits 1.
UNSHARE_SIGKILLED = "sigprocmask unblock failed"
#: How often :meth:`Runtime.wait_for` reads the log.
POLL_S = 0.05
#: How much of the log an error message quotes.
TAIL_CHARS = 2000
#: A host name: letters, digits, '-' and '.', at most 64 characters (the kernel's limit).
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")

# The setup, run by SHELL as pid 1 of the new PID namespace, its stdin the go pipe, its
# stdout the ready pipe, its stderr (and `unshare`'s) a file of this process's: it opens the
# log first, while the host's /tmp is still in view. Arguments: the log, the stash, the host
# name, the working folder, the number N of shared folders, N folders relative to /tmp, the
# command. (dash takes no fd above 9 in a redirection: hence the pipes on 0 and 1.)
SETUP = f"""set -eu
exec 2>>"$1"
stash=$2 name=$3 cwd=$4 n=$5
shift 5
tools={TOOLS_PATH}
PATH=$tools mount --rbind /tmp "$stash"
PATH=$tools mount -t tmpfs -o mode=1777 {SETUP_NAME} /tmp
while [ "$n" -gt 0 ]; do
    PATH=$tools mkdir -p "/tmp/$1"
    PATH=$tools mount --rbind "$stash/$1" "/tmp/$1"
    shift
    n=$((n - 1))
done
PATH=$tools umount -l "$stash"
printf '%s' "$name" > /proc/sys/kernel/hostname
cd "$cwd"
printf 'ready\\n'
read -r word
exec "$@" </dev/null >&2
"""

# What `refusal` tries once: the same namespaces, a tmpfs on /tmp, a host name.
TRIAL = f"""set -eu
PATH={TOOLS_PATH} mount -t tmpfs {SETUP_NAME} /tmp
printf '%s' rt-trial > /proc/sys/kernel/hostname
[ "$$" = 1 ]
"""


@functools.cache
def refusal() -> str | None:
    """Why a runtime cannot be simulated on this machine, or ``None`` when it can.

    Checks the platform (Linux), the user (root) and ``unshare``, then starts one tiny
    runtime (the same namespaces, a tmpfs on ``/tmp``, a host name) and caches the answer.
    Tests skip with it: ``pytest.skip(reason)``.
    """
    if not sys.platform.startswith("linux"):
        return f"simulating a runtime needs Linux's namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return "simulating a runtime needs root (mount, UTS and PID namespaces)"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "simulating a runtime needs `unshare` (util-linux), which is not installed"
    if not Path(SHELL).exists():
        return f"simulating a runtime needs {SHELL}"
    if _stash_parent() is None:
        return ("simulating a runtime needs a writable folder outside /tmp: one of "
                + ", ".join(str(p) for p in STASH_PARENTS))
    try:
        trial = subprocess.run([unshare, *UNSHARE_OPTIONS, SHELL, "-c", TRIAL],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=SETUP_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"`unshare` could not start a runtime: {error}"
    if trial.returncode != 0:
        said = (trial.stderr.strip() or trial.stdout.strip() or "no message")[-500:]
        return f"`unshare` refused a runtime (exit {trial.returncode}): {said}"
    return None


def _python_folders() -> list[Path]:
    """The folders this Python imports from that lie under ``/tmp``: a clone installed in
    editable mode there (CI's fresh clone), a virtual environment there. A real runtime has
    its packages outside its local disk's scratch space; without these, the fresh ``/tmp``
    would hide colabrun itself from the command."""
    import colabrun

    package = Path(colabrun.__file__).resolve().parent
    candidates = [package.parent, *(p.resolve() for p in package.iterdir() if p.is_symlink()),
                  Path(sys.prefix).resolve(), *(Path(entry).resolve() for entry in sys.path
                                                if entry and Path(entry).is_dir())]
    return [p for p in candidates if p.is_relative_to(TMP) and p != TMP]


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
        self.hostname: str = hostname if hostname is not None else f"rt-{secrets.token_hex(4)}"
        if not HOSTNAME.fullmatch(self.hostname):
            raise ValueError(f"{self.hostname!r} is not a host name: use 1-64 letters, "
                             "digits, '-' or '.', starting with a letter or digit")
        self.cwd: Path = (cwd if cwd is not None else Path.cwd()).resolve()
        self._env = dict(os.environ if env is None else env)
        requested = [Path(p).resolve() for p in shared]
        for path in requested:
            if path == TMP or TMP.is_relative_to(path):
                raise ValueError(f"cannot share {path}: the runtime would keep the host's "
                                 "/tmp; share the folders under it that it needs")
            if path.exists() and not path.is_dir():
                raise ValueError(f"cannot share {path}: only folders can be shared")
        self._create = requested
        automatic = [self.cwd]
        if log is not None:
            self.log: Path = Path(log).resolve()
            automatic.append(self.log.parent)
        else:
            handle, name = tempfile.mkstemp(prefix=f"{SETUP_NAME}-", suffix=".log")
            os.close(handle)
            self.log = Path(name)
            weakref.finalize(self, self.log.unlink, missing_ok=True)
        if share_python:
            automatic += _python_folders()
        automatic = [p for p in automatic if p != TMP and not TMP.is_relative_to(p)]
        self.shared: tuple[Path, ...] = tuple(_outermost([*requested, *automatic]))
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._ns: str | None = None
        self._stash: Path | None = None
        self._unshare_err: IO[bytes] | None = None  # what `unshare` itself says
        self._unshare_said = ""

    def __repr__(self) -> str:
        state = ("not started" if self._proc is None
                 else "alive" if self.alive() else f"ended ({self._status()})")
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
        if self._proc is not None:
            raise RuntimeError(f"{self!r} was started already")
        reason = refusal()
        if reason is not None:
            raise RuntimeError(f"cannot simulate a runtime here: {reason}")
        unshare = shutil.which("unshare")
        parent = _stash_parent()
        assert unshare is not None and parent is not None  # refusal() checked both
        for folder in self._create:
            folder.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        binds = [str(p.relative_to(TMP)) for p in self.shared if p.is_relative_to(TMP)]
        self._stash = Path(tempfile.mkdtemp(prefix=f"{SETUP_NAME}-", dir=parent))
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        try:
            command = [unshare, *UNSHARE_OPTIONS, SHELL, "-c", SETUP, SETUP_NAME,
                       str(self.log), str(self._stash), self.hostname, str(self.cwd),
                       str(len(binds)), *binds, *self.argv]
            self.log.write_bytes(b"")
            self._unshare_err = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                command, stdin=go_r, stdout=ready_w, stderr=self._unshare_err, cwd=self.cwd,
                env=self._env, start_new_session=True)
            for fd in (ready_w, go_r):
                os.close(fd)
            ready_w = go_r = -1
            self._await_ready(ready_r)
            shell = self._only_child()
            self._ns = os.readlink(f"/proc/{shell}/ns/pid")
            self._pid = shell
            try:
                os.write(go_w, b"go\n")
            except OSError:  # it died in between; wait() tells how
                pass
            os.close(go_w)
            go_w = -1
            self._await_exec(shell)
        except BaseException:
            if self._proc is not None:
                self.kill()
            self._ended()
            raise
        finally:
            for fd in (ready_r, ready_w, go_r, go_w):
                if fd >= 0:
                    os.close(fd)
            self._remove_stash()  # the setup no longer needs it, or never will
        weakref.finalize(self, _end_abandoned, self._proc, self._pid, self._ns,
                         self._unshare_err)
        return self

    def __enter__(self) -> Runtime:
        """Start the runtime unless started already."""
        if self._proc is None:
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
        if self._pid is None:
            raise RuntimeError(f"{self!r} has no pid: start it first")
        return self._pid

    def alive(self) -> bool:
        """Whether the runtime still runs (started, and its command not yet ended)."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """The VM dies: SIGKILL pid 1, so the kernel kills every process of the runtime,
        and wait until they are gone. Does nothing more on a runtime already ended or
        never started.

        Raises:
            subprocess.TimeoutExpired: the runtime did not end within
                :data:`KILL_TIMEOUT_S` (a process stuck in the kernel).
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if not self._signal_pid1(signal.SIGKILL):
                proc.kill()  # pid 1 not known yet: --kill-child takes it along
            proc.wait(timeout=KILL_TIMEOUT_S)
        self._ended()

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
        if self._proc is None:
            raise RuntimeError(f"{self!r} was never started")
        self._proc.wait(timeout=timeout)
        self._ended()
        return self._status()

    # -- its processes ----------------------------------------------------------------

    def processes(self) -> list[int]:
        """The host pids of every process still in the runtime's PID namespace."""
        if self._ns is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _pid_ns(int(entry)) == self._ns:
                found.append(int(entry))
        return sorted(found)

    def freeze(self) -> None:
        """SIGSTOP every process of the runtime (a frozen owner), until each is stopped.

        Raises:
            TimeoutError: some process was still not stopped after :data:`FREEZE_TIMEOUT_S`.
        """
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        while True:
            running = [p for p in self.processes() if _state(p) not in "TtZX"]
            if not running:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes {running} of {self!r} did not stop")
            for pid in running:
                _send(pid, signal.SIGSTOP)
            time.sleep(0.001)

    def thaw(self) -> None:
        """SIGCONT every process of the runtime: a frozen owner alive again."""
        for pid in self.processes():
            _send(pid, signal.SIGCONT)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to pid 1, the command (nothing once the runtime has ended).

        As pid 1 of its namespace the command ignores every signal it installs no handler
        for, SIGKILL and SIGSTOP excepted (see the class's docstring).

        Args:
            sig: the signal's number, e.g. ``signal.SIGTERM``.
        """
        if self.alive():
            self._signal_pid1(sig)

    # -- its log ----------------------------------------------------------------------

    def output(self) -> str:
        """What the runtime wrote to its log so far (stdout and stderr, the setup's too)."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

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
                how = ("was never started" if self._proc is None
                       else f"ended (status {self._status()})")
                raise RuntimeError(f"runtime {self.hostname} {how} before its log matched "
                                   f"{pattern!r}; its log ({self.log}) ends with:\n"
                                   f"{_tail(text)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"runtime {self.hostname}'s log did not match {pattern!r} "
                                   f"within {timeout:g} s; it ({self.log}) ends with:\n"
                                   f"{_tail(text)}")
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    # -- inside -----------------------------------------------------------------------

    def _await_ready(self, ready: int) -> None:
        """Wait for the setup's ``ready`` on its pipe; raise if the setup failed."""
        assert self._proc is not None
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            readable, _, _ = select.select([ready], [], [], POLL_S)
            if readable and os.read(ready, 64).startswith(b"ready"):
                return
            if self._proc.poll() is not None:  # `unshare` holds the pipe: no EOF before
                self._ended()
                said = f"\n`unshare` said: {self._unshare_said}" if self._unshare_said else ""
                raise RuntimeError(f"runtime {self.hostname}'s setup failed (status "
                                   f"{self._status()}); its log ({self.log}) says:\n"
                                   f"{_tail(self.output())}{said}")
        raise RuntimeError(f"runtime {self.hostname}'s setup did not finish within "
                           f"{SETUP_TIMEOUT_S:g} s; its log says:\n{_tail(self.output())}")

    def _only_child(self) -> int:
        """The pid of ``unshare``'s child: the setup, soon the command."""
        assert self._proc is not None
        children = _children(self._proc.pid)
        if len(children) != 1:
            raise RuntimeError(f"runtime {self.hostname}: `unshare` has children "
                               f"{children}, expected one")
        return children[0]

    def _await_exec(self, pid: int) -> None:
        """Wait until ``pid`` no longer runs the setup: it exec'd the command, or died."""
        assert self._proc is not None
        setup = b"\0".join(s.encode() for s in (SHELL, "-c", SETUP, SETUP_NAME)) + b"\0"
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return  # gone already: the command ran and ended
            if not cmdline.startswith(setup) or self._proc.poll() is not None:
                return
            time.sleep(0.001)
        raise RuntimeError(f"runtime {self.hostname}: its command was not exec'd within "
                           f"{SETUP_TIMEOUT_S:g} s")

    def _signal_pid1(self, sig: int) -> bool:
        """Send ``sig`` to pid 1 if it is still this runtime's; whether it was."""
        if self._pid is None or _pid_ns(self._pid) != self._ns:
            return False  # not known yet, or gone (its pid may be another's by now)
        return _send(self._pid, sig)

    def _status(self) -> int:
        """The command's exit status, once ``unshare`` has ended (see :meth:`wait`)."""
        assert self._proc is not None and self._proc.returncode is not None
        status = self._proc.returncode
        if status == 1 and UNSHARE_SIGKILLED in self._unshare_said:
            return -signal.SIGKILL  # `unshare` cannot re-raise a SIGKILL on itself: exit 1
        return status

    def _ended(self) -> None:
        """Tidy up after ``unshare`` ended: the stash, what ``unshare`` said."""
        self._remove_stash()
        if self._unshare_err is not None:
            self._unshare_err.seek(0)
            self._unshare_said = self._unshare_err.read().decode(errors="replace").strip()
            self._unshare_err.close()
            self._unshare_err = None

    def _remove_stash(self) -> None:
        """Remove the stash folder (best effort: it is empty on the host)."""
        if self._stash is not None:
            try:
                self._stash.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return  # busy, oddly: try again at the next end
            self._stash = None


def _stash_parent() -> Path | None:
    """The first of :data:`STASH_PARENTS` that is a writable folder outside /tmp."""
    for parent in STASH_PARENTS:
        resolved = parent.resolve()
        if (resolved.is_dir() and not resolved.is_relative_to(TMP)
                and os.access(resolved, os.W_OK | os.X_OK)):
            return resolved
    return None


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without duplicates and without those inside another one, sorted."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return sorted(kept)


def _pid_ns(pid: int) -> str | None:
    """The PID namespace of process ``pid`` (``pid:[4026532...]``), ``None`` when gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _state(pid: int) -> str:
    """The state letter of process ``pid`` (``R``, ``S``, ``T``...; ``X`` when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rpartition(")")[2].split()[0]  # the name, in parentheses, may hold spaces


def _children(pid: int) -> list[int]:
    """The pids of the children of single-threaded process ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return sorted(int(p) for p in text.split())
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _send(pid: int, sig: int) -> bool:
    """``os.kill``, quiet when the process is gone; whether it was sent."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _tail(text: str) -> str:
    """The end of a log, for an error message."""
    if not text.strip():
        return "(nothing)"
    return text[-TAIL_CHARS:]


def _end_abandoned(proc: subprocess.Popen[bytes], pid: int, ns: str,
                   said: IO[bytes] | None) -> None:
    """Kill a runtime whose :class:`Runtime` was collected, or still runs at exit, as
    :meth:`Runtime.kill` does."""
    if proc.poll() is None:
        if _pid_ns(pid) != ns or not _send(pid, signal.SIGKILL):
            proc.kill()  # --kill-child takes pid 1 along
        try:
            proc.wait(timeout=KILL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    if said is not None:
        said.close()
