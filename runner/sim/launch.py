"""Starting a simulated runtime: the setup script, ``unshare``, and the handshake with it.

``unshare --mount --uts --pid --fork --kill-child --mount-proc`` runs a small ``sh`` script
(:data:`SETUP`) as the new PID namespace's first process. Inside the new mount namespace (its
mounts private, so the host never sees one) the script binds the host's ``/tmp`` on a
*stash* folder outside it (under ``/run``, else ``/dev/shm``), mounts the tmpfs on ``/tmp``,
binds each shared folder under ``/tmp`` back from the stash, unmounts the stash, sets the host
name, reports ready on one pipe (its stdout), waits for the go-ahead on another (its stdin:
so this process learns the pid first), and ``exec``\\ s the command, stdin from ``/dev/null``,
stdout and stderr to the log: the command *is* the namespace's pid 1. Every argument reaches
the script as a positional parameter, never as shell text.

:func:`refusal` says whether this machine can do that at all; a :class:`Launch` is one
``unshare`` of a :class:`~colabrun.runner.sim.runtime.Runtime`, from its start to its end.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from colabrun.runner.sim.folders import TMP, binds
from colabrun.runner.sim.procfs import children, pid_namespace, send

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
#: Upper bound on the end of a killed runtime (a process stuck in the kernel delays it).
KILL_TIMEOUT_S = 60.0
#: What ``unshare`` (util-linux 2.38) says when its child was SIGKILLed: it then exits 1.
UNSHARE_SIGKILLED = "sigprocmask unblock failed"
#: How often the handshake looks for the setup's ``ready``.
POLL_S = 0.05
#: How much of the log an error message quotes.
TAIL_CHARS = 2000

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
    if stash_parent() is None:
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


def stash_parent() -> Path | None:
    """The first of :data:`STASH_PARENTS` that is a writable folder outside /tmp."""
    for parent in STASH_PARENTS:
        resolved = parent.resolve()
        if (resolved.is_dir() and not resolved.is_relative_to(TMP)
                and os.access(resolved, os.W_OK | os.X_OK)):
            return resolved
    return None


def tail(text: str) -> str:
    """The end of a log, for an error message."""
    if not text.strip():
        return "(nothing)"
    return text[-TAIL_CHARS:]


def read_log(log: Path) -> str:
    """What a runtime wrote to its log so far; empty if there is none."""
    try:
        return log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class Launch:
    """One ``unshare`` of a runtime, from its start to its end: the process, the host pid of
    the runtime's pid 1 and its PID namespace (known once the setup is ready), and what
    ``unshare`` itself said.

    Creating one starts ``unshare`` (its setup then waits); :meth:`handshake` lets it go on
    to ``exec`` the command. Whatever goes wrong, :meth:`kill` ends it.

    Args:
        argv: the command.
        hostname: the runtime's host name (checked already).
        cwd: the folder the command starts in.
        log: the host file for the setup's and the command's output (it exists).
        shared: the host folders the runtime sees (those under ``/tmp`` are bound in).
        env: the environment of ``unshare`` and the command.

    Raises:
        OSError: ``unshare`` did not start.
    """

    def __init__(self, argv: Sequence[str], *, hostname: str, cwd: Path, log: Path,
                 shared: Sequence[Path], env: Mapping[str, str]) -> None:
        unshare, parent = shutil.which("unshare"), stash_parent()
        assert unshare is not None and parent is not None  # the caller checked refusal()
        self.hostname, self.log = hostname, log
        self.pid: int | None = None
        self.namespace: str | None = None
        self.said = ""  # what `unshare` itself said, once it ended
        self._said: IO[bytes] | None = tempfile.TemporaryFile()
        self.stash: Path | None = Path(tempfile.mkdtemp(prefix=f"{SETUP_NAME}-", dir=parent))
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        self._ready, self._go = ready_r, go_w
        folders = binds(shared)
        command = [unshare, *UNSHARE_OPTIONS, SHELL, "-c", SETUP, SETUP_NAME, str(log),
                   str(self.stash), hostname, str(cwd), str(len(folders)), *folders, *argv]
        try:
            self.proc = subprocess.Popen(command, stdin=go_r, stdout=ready_w,
                                         stderr=self._said, cwd=cwd, env=dict(env),
                                         start_new_session=True)
        except BaseException:
            self._close_pipes()
            self.ended()
            raise
        finally:
            for fd in (ready_w, go_r):  # the setup's ends
                os.close(fd)

    def handshake(self) -> None:
        """Wait for the setup's ``ready``, learn pid 1 and its namespace, let the setup go on,
        and return once it ``exec``'d the command (or the command already ended).

        Raises:
            RuntimeError: the setup failed or did not finish in time (the message quotes
                the log and what ``unshare`` said).
        """
        try:
            self._await_ready()
            shell = self._only_child()
            self.namespace = os.readlink(f"/proc/{shell}/ns/pid")
            self.pid = shell
            self._go_ahead()
            self._await_exec(shell)
        finally:
            self._close_pipes()
            self.remove_stash()  # the setup no longer needs it, or never will

    def alive(self) -> bool:
        """Whether ``unshare`` still runs: the runtime's command has not ended."""
        return self.proc.poll() is None

    def status(self) -> int:
        """The command's exit status, once ``unshare`` has ended: minus the signal that
        killed it, also a SIGKILL, which ``unshare`` reports as exit 1 with a message."""
        assert self.proc.returncode is not None
        status = self.proc.returncode
        if status == 1 and UNSHARE_SIGKILLED in self.said:
            return -signal.SIGKILL  # `unshare` cannot re-raise a SIGKILL on itself: exit 1
        return status

    def wait(self, timeout: float | None) -> int:
        """Wait for ``unshare`` to end; the command's status (:meth:`status`).

        Raises:
            subprocess.TimeoutExpired: it still runs after ``timeout`` seconds.
        """
        self.proc.wait(timeout=timeout)
        self.ended()
        return self.status()

    def signal_pid1(self, sig: int) -> bool:
        """Send ``sig`` to pid 1 if it is still this runtime's; whether it was."""
        if self.pid is None or pid_namespace(self.pid) != self.namespace:
            return False  # not known yet, or gone (its pid may be another's by now)
        return send(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL pid 1, so the kernel kills every process of the runtime, and wait until
        ``unshare`` ended; then tidy up (:meth:`ended`).

        Raises:
            subprocess.TimeoutExpired: it did not end within :data:`KILL_TIMEOUT_S`.
        """
        if self.alive():
            if not self.signal_pid1(signal.SIGKILL):
                self.proc.kill()  # pid 1 not known yet: --kill-child takes it along
            self.proc.wait(timeout=KILL_TIMEOUT_S)
        self.ended()

    def abandon(self) -> None:
        """:meth:`kill`, for a runtime whose object was collected or still runs at exit:
        never raises."""
        try:
            self.kill()
        except subprocess.TimeoutExpired:
            self.ended()

    def ended(self) -> None:
        """Tidy up after ``unshare`` ended: the stash, what ``unshare`` said."""
        self.remove_stash()
        if self._said is not None:
            self._said.seek(0)
            self.said = self._said.read().decode(errors="replace").strip()
            self._said.close()
            self._said = None

    def remove_stash(self) -> None:
        """Remove the stash folder (best effort: it is empty on the host)."""
        if self.stash is not None:
            try:
                self.stash.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return  # busy, oddly: try again at the next end
            self.stash = None

    def _go_ahead(self) -> None:
        """Tell the setup to ``exec`` the command, now that its pid is known."""
        try:
            os.write(self._go, b"go\n")
        except OSError:  # it died in between; its status tells how
            pass
        os.close(self._go)
        self._go = -1

    def _close_pipes(self) -> None:
        """Close this process's ends of the ready and go pipes, those still open."""
        for fd in (self._ready, self._go):
            if fd >= 0:
                os.close(fd)
        self._ready = self._go = -1

    def _await_ready(self) -> None:
        """Wait for the setup's ``ready`` on its pipe; raise if the setup failed."""
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._ready], [], [], POLL_S)
            if readable and os.read(self._ready, 64).startswith(b"ready"):
                return
            if not self.alive():  # `unshare` holds the pipe: no EOF before
                self.ended()
                said = f"\n`unshare` said: {self.said}" if self.said else ""
                raise RuntimeError(f"runtime {self.hostname}'s setup failed (status "
                                   f"{self.status()}); its log ({self.log}) says:\n"
                                   f"{tail(read_log(self.log))}{said}")
        raise RuntimeError(f"runtime {self.hostname}'s setup did not finish within "
                           f"{SETUP_TIMEOUT_S:g} s; its log says:\n{tail(read_log(self.log))}")

    def _only_child(self) -> int:
        """The pid of ``unshare``'s child: the setup, soon the command."""
        found = children(self.proc.pid)
        if len(found) != 1:
            raise RuntimeError(f"runtime {self.hostname}: `unshare` has children "
                               f"{found}, expected one")
        return found[0]

    def _await_exec(self, pid: int) -> None:
        """Wait until ``pid`` no longer runs the setup: it exec'd the command, or died."""
        setup = b"\0".join(s.encode() for s in (SHELL, "-c", SETUP, SETUP_NAME)) + b"\0"
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return  # gone already: the command ran and ended
            if not cmdline.startswith(setup) or not self.alive():
                return
            time.sleep(0.001)
        raise RuntimeError(f"runtime {self.hostname}: its command was not exec'd within "
                           f"{SETUP_TIMEOUT_S:g} s")
