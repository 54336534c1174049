"""A simulated runtime (``colabrun.runner.sim``): its own host name and empty /tmp, the
shared folders the host's, and a kill that takes every process of it along.

Real namespaces, so Linux as root with ``unshare``: elsewhere these tests skip with
``refusal()``'s reason (the argument checks run everywhere). Each takes well under a second.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import colabrun
from colabrun.runner.platform import runtime_id
from colabrun.runner.sim import Runtime, refusal
from colabrun.runner.sim.runtime import SETUP_NAME, STASH_PARENTS

REASON = refusal()
needs_runtime = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` (a generous bound: loaded machines)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _gone(pid: int, ns: str) -> bool:
    """Whether ``pid`` no longer names a process of the PID namespace ``ns``."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != ns
    except OSError:
        return True


def _stashes() -> set[Path]:
    return {p for parent in STASH_PARENTS if parent.is_dir()
            for p in parent.glob(f"{SETUP_NAME}-*")}


@needs_runtime
def test_a_runtime_has_its_own_host_name(tmp_path: Path) -> None:
    one = Runtime(["cat", "/proc/sys/kernel/hostname"], log=tmp_path / "one.log").start()
    two = Runtime(["cat", "/proc/sys/kernel/hostname"], log=tmp_path / "two.log").start()
    assert (one.wait(5), two.wait(5)) == (0, 0)
    names = {one.output().strip(), two.output().strip()}
    assert names == {one.hostname, two.hostname} and len(names) == 2
    assert socket.gethostname() not in names
    named = Runtime(["hostname"], hostname="rt-named", log=tmp_path / "named.log").start()
    assert named.wait(5) == 0 and named.output().strip() == "rt-named"


@needs_runtime
def test_tmp_starts_empty_and_what_is_written_there_stays_inside() -> None:
    name = f"colabrun-test-{uuid.uuid4().hex}"
    # nothing shared under /tmp: the cwd is the repository's, the log the default one
    with Runtime(["sh", "-c", f"ls -A /tmp; echo secret > /tmp/{name}; echo written; "
                              "exec sleep 300"], cwd=Path("/"), share_python=False) as writer:
        writer.wait_for(r"^written$", timeout=5)
        assert writer.output() == "written\n"  # `ls -A /tmp` printed nothing
        assert not (Path("/tmp") / name).exists()
        with Runtime(["sh", "-c", f"ls -A /tmp; test -e /tmp/{name} || echo absent"],
                     cwd=Path("/"), share_python=False) as other:
            assert other.wait(5) == 0
            assert other.output() == "absent\n"
        # the runtime's /tmp is its own tmpfs, and the host sees none of its mounts
        mounts = Path(f"/proc/{writer.pid}/mountinfo").read_text()
        assert re.search(rf"^\S+ \S+ \S+ / /tmp \S+ .*- tmpfs {SETUP_NAME} ", mounts, re.M)
        assert SETUP_NAME not in Path("/proc/self/mountinfo").read_text()
    log = writer.log
    assert log.exists()
    del writer
    gc.collect()
    assert not log.exists()  # the default log goes with its runtime


@needs_runtime
def test_a_shared_folder_under_tmp_is_the_hosts(tmp_path: Path) -> None:
    root, hidden = tmp_path / "root", tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "f").write_text("host only")
    script = ('cat "$1/seed"; echo from-runtime > "$1/made"; '
              'test -e "$2/f" || echo hidden-is-hidden; ls -A /tmp')
    root.mkdir()
    (root / "seed").write_text("seed\n")
    # the default log, and the cwd outside /tmp: only `root` is shared
    rt = Runtime(["sh", "-c", script, "sh", str(root), str(hidden)], shared=[root],
                 cwd=Path("/"), share_python=False)
    assert rt.start().wait(5) == 0
    resolved = root.resolve()
    first = [resolved.relative_to("/tmp").parts[0]] if resolved.is_relative_to("/tmp") else []
    assert rt.output().splitlines() == ["seed", "hidden-is-hidden", *first]
    assert (root / "made").read_text() == "from-runtime\n"
    assert rt.shared == (resolved,)


@needs_runtime
def test_the_cwd_and_the_logs_folder_are_shared(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rt = Runtime(["sh", "-c", "pwd; echo here > made"], cwd=work, log=tmp_path / "logs" / "l",
                 share_python=False)
    assert rt.start().wait(5) == 0
    assert rt.output() == f"{work}\n"
    assert (work / "made").read_text() == "here\n"
    assert set(rt.shared) == {work, tmp_path / "logs"}


@needs_runtime
def test_the_folders_python_imports_from_under_tmp_are_shared(tmp_path: Path) -> None:
    """A clone installed in editable mode under /tmp (CI's fresh clone) stays importable."""
    import colabrun

    package = Path(colabrun.__file__).resolve().parent.parent
    rt = Runtime(["sh", "-c", "true"], cwd=Path("/"))
    if package.is_relative_to("/tmp"):
        assert any(package.is_relative_to(p) for p in rt.shared), rt.shared
    assert not any(p == Path("/tmp") for p in rt.shared)
    assert Runtime(["sh", "-c", "true"], cwd=Path("/"), share_python=False).shared == ()


@needs_runtime
def test_kill_kills_the_command_and_its_grandchildren(tmp_path: Path) -> None:
    rt = Runtime(["sh", "-c", "sh -c 'sleep 300 & wait' & wait"], log=tmp_path / "log")
    with rt.start():
        _until(lambda: len(rt.processes()) == 3)  # sh, its sh, that one's sleep
        pids = rt.processes()
        assert rt.pid in pids and rt.alive()
        ns = os.readlink(f"/proc/{rt.pid}/ns/pid")
        assert ns != os.readlink("/proc/self/ns/pid")
        rt.kill()
        assert rt.processes() == [] and not rt.alive()
        assert all(_gone(pid, ns) for pid in pids)
        assert rt.wait(0) == -signal.SIGKILL
        rt.kill()  # idempotent


@needs_runtime
def test_an_abandoned_runtime_dies_with_its_object(tmp_path: Path) -> None:
    rt = Runtime(["sleep", "300"], log=tmp_path / "log").start()
    pid, ns = rt.pid, os.readlink(f"/proc/{rt.pid}/ns/pid")
    del rt
    gc.collect()
    assert _gone(pid, ns)


@needs_runtime
def test_freeze_stops_every_process_and_thaw_continues_them(tmp_path: Path) -> None:
    with Runtime(["sh", "-c", "sleep 300 & wait"], log=tmp_path / "log") as rt:
        _until(lambda: len(rt.processes()) == 2)
        rt.freeze()
        assert [_state(p) for p in rt.processes()] == ["T", "T"]
        rt.thaw()
        assert all(_state(p) != "T" for p in rt.processes())
        assert rt.alive()


@needs_runtime
def test_the_command_is_pid_1_and_ignores_signals_it_does_not_handle(tmp_path: Path) -> None:
    with Runtime(["sh", "-c", "echo $$; exec sleep 300"], log=tmp_path / "a") as plain:
        plain.wait_for(r"^1$", timeout=5)
        plain.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            plain.wait(timeout=0.1)
    trapping = Runtime(["sh", "-c", "trap 'exit 7' TERM; echo ready; "
                                    "while :; do sleep 0.01; done"], log=tmp_path / "b")
    with trapping:
        trapping.wait_for("ready", timeout=5)
        trapping.send_signal(signal.SIGTERM)
        assert trapping.wait(timeout=5) == 7
    assert plain.wait(0) == -signal.SIGKILL


@needs_runtime
def test_wait_for_finds_a_line_and_fails_clearly(tmp_path: Path) -> None:
    with Runtime(["sh", "-c", "echo one; echo 'saved step-000000005'; exec sleep 300"],
                 log=tmp_path / "log") as rt:
        assert rt.wait_for(r"saved (\S+)", timeout=5).group(1) == "step-000000005"
        with pytest.raises(TimeoutError, match=r"(?s)'never'.*within 0.2 s.*saved step"):
            rt.wait_for("never", timeout=0.2)
    ended = Runtime(["sh", "-c", "echo bye; exit 3"], log=tmp_path / "ended").start()
    with pytest.raises(RuntimeError, match=r"(?s)ended \(status 3\).*'never'.*bye"):
        ended.wait_for("never", timeout=5)
    missing = Runtime(["no-such-command-here"], log=tmp_path / "missing").start()
    assert missing.wait(5) == 127 and "not found" in missing.output()


@needs_runtime
def test_python_inside_imports_colabrun_and_sees_another_runtime_id(tmp_path: Path) -> None:
    code = ("import colabrun; from colabrun.runner.platform import runtime_id; "
            "print(runtime_id()); print(colabrun.__file__)")
    rt = Runtime([sys.executable, "-c", code], log=tmp_path / "log").start()
    assert rt.wait(10) == 0, rt.output()
    inside, where = rt.output().split()
    assert inside.startswith(f"{rt.hostname}-") and inside != runtime_id()
    assert colabrun.__file__ is not None
    assert Path(where).resolve() == Path(colabrun.__file__).resolve()


@needs_runtime
def test_the_host_keeps_no_mount_and_no_stash(tmp_path: Path) -> None:
    before_mounts, before_stashes = Path("/proc/self/mountinfo").read_text(), _stashes()
    rt = Runtime(["sleep", "300"], shared=[tmp_path / "root"], log=tmp_path / "log").start()
    assert Path("/proc/self/mountinfo").read_text() == before_mounts
    assert _stashes() == before_stashes  # removed once the setup is done
    rt.kill()
    assert Path("/proc/self/mountinfo").read_text() == before_mounts
    assert _stashes() == before_stashes
    assert (tmp_path / "root").is_dir()  # a missing shared folder is created


def test_a_runtime_cannot_share_tmp_itself_or_a_file(tmp_path: Path) -> None:
    for folder in (Path("/tmp"), Path("/")):
        with pytest.raises(ValueError, match="host's /tmp"):
            Runtime(["true"], shared=[folder], log=tmp_path / "log")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="only folders"):
        Runtime(["true"], shared=[tmp_path / "file"], log=tmp_path / "log")


def test_a_runtime_needs_a_command_and_a_host_name() -> None:
    with pytest.raises(ValueError, match="argv is empty"):
        Runtime([])
    with pytest.raises(ValueError, match="not a host name"):
        Runtime(["true"], hostname="a b; rm -rf /")
    assert Runtime(["true"]).hostname.startswith("rt-")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check after Linux's")
def test_refusal_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from colabrun.runner.sim import runtime

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (runtime.refusal.__wrapped__() or "")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "`unshare`" in (runtime.refusal.__wrapped__() or "")
    monkeypatch.setattr(shutil, "which", lambda name: "/bin/false")
    assert "refused a runtime (exit 1)" in (runtime.refusal.__wrapped__() or "")
