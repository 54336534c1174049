"""Runtimes that die, in the simulator: only what reached the root survives, and the next
runtime, running the same command, continues from exactly that.

Each runtime is :class:`~colabrun.runner.sim.Runtime`: its own PID, mount and UTS
namespaces, so a kill takes every process of it at once, its ``/tmp`` (where checkpoints
are staged) dies with it, and its host name (so its runtime id) is its own. Skipped, with
the reason, where ``unshare`` is refused.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.runner.sim import Runtime, refusal
from colabrun.state.checkpoints import CheckpointStore, parse_checkpoint_name
from colabrun.state.lease import written_after_fencing
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, digits_spec, final_payload, write_spec_file

pytestmark = [pytest.mark.skipif(refusal() is not None, reason=str(refusal())),
              pytest.mark.slow]

#: short, so that a fresh runtime takes a dead one's job over in seconds
LEASE_S = 4.0
RESUMED = re.compile(r"resuming from (step-\d+-g\d+)")


def _spec(root: Path, **overrides: Any) -> JobSpec:
    """Digits, supervised, staged in the runtime's own /tmp (the default local folder)."""
    fields: dict[str, Any] = {"epochs": 6, "supervise": True, "local_dir": None,
                              "lease_s": LEASE_S, **overrides}
    return digits_spec(root, name="d", **fields)


def _runtime(tmp_path: Path, spec_file: Path, root: Path, log: str,
             **env: str) -> Runtime:
    argv = [sys.executable, "-m", "colabrun", "run", str(spec_file)]
    return Runtime(argv, shared=[root, tmp_path], cwd=tmp_path, log=tmp_path / log,
                   env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **env})


def _newest_under_root(root: Path) -> str | None:
    names = CheckpointStore(root / "d", Storage()).list_names()
    keyed = [(parse_checkpoint_name(n), n) for n in names]
    return max((k, n) for k, n in keyed if k is not None)[1] if keyed else None


def _reference(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    root = tmp_path / "reference"
    spec = _spec(root, supervise=False, local_dir=str(tmp_path / "reference-local"), **overrides)
    assert runner.run(spec).status.value == "completed"
    return final_payload(root / "d")


def test_five_deaths_each_resumed_from_the_root_end_bitwise_equal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    spec_file = write_spec_file(tmp_path / "d.json", _spec(root, epochs=60))
    rng = random.Random(19)
    for death in range(5):
        newest_before = _newest_under_root(root)
        with _runtime(tmp_path, spec_file, root, f"run{death}.log") as rt:
            rt.wait_for(r"fresh start|resuming from", timeout=120)
            out = rt.output()
            if newest_before is None:
                assert "fresh start" in out, out
            else:  # from the root's newest, never a local copy: that /tmp died
                assert RESUMED.search(out) and RESUMED.search(out)[1] == newest_before, out
            rt.wait_for(r"epoch \d+/60 done", timeout=120)
            time.sleep(rng.uniform(0.1, 1.5))
            assert rt.alive(), f"death {death} came after the job ended:\n{rt.output()}"
            rt.kill()
            assert rt.processes() == []
    with _runtime(tmp_path, spec_file, root, "last.log") as rt:
        assert rt.wait(timeout=300) == 0, rt.output()
        assert RESUMED.search(rt.output()) or _newest_under_root(root) is None
    state = StateFile(root / "d", Storage()).read()
    assert state is not None and state.status.value == "completed"
    assert len(state.sessions) == 6
    assert_exactly_equal(final_payload(root / "d"), _reference(tmp_path, epochs=60))


def test_a_second_runtime_is_refused_while_the_first_lives_then_takes_over(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    spec_file = write_spec_file(tmp_path / "d.json", _spec(root, epochs=40))
    with _runtime(tmp_path, spec_file, root, "first.log") as first:
        first.wait_for(r"saved step-", timeout=120)
        with _runtime(tmp_path, spec_file, root, "second.log") as second:
            assert second.wait(timeout=60) == 4, second.output()
            refused = second.output()
        assert "is held by" in refused and "being run by pid" in refused
        assert "Traceback" not in refused
        assert first.alive(), "the live owner is untouched"
        first.kill()
    with _runtime(tmp_path, spec_file, root, "third.log") as third:
        started = time.monotonic()
        third.wait_for(r"took job 'd' over", timeout=60)
        taken_s = time.monotonic() - started
        third.wait_for(r"resuming from", timeout=60)
        third.kill()
    assert taken_s <= LEASE_S + 30, f"took {taken_s:.1f} s (imports included)"


def _holds_a_lock_on(path: Path) -> bool:
    """Whether any process holds a lock on ``path`` (``/proc/locks``: ``maj:min:inode``)."""
    if not path.exists():
        return False
    st = path.stat()
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[5] == key for line in Path("/proc/locks").read_text().splitlines()
               if len(line.split()) > 5)


def _freeze_outside_the_state_lock(runtime: Runtime, job_dir: Path) -> None:
    """SIGSTOP the runtime at a moment it holds no lock on ``state.json.lock``.

    That lock serialises state writes *on one machine*; two Colab runtimes are two VMs and
    never share it. The simulator's runtimes share one kernel, so an owner frozen inside a
    state write would block the other's takeover for the lock's timeout: not the case
    under test (fencing by generation).
    """
    lock = job_dir / "state.json.lock"
    for _ in range(200):
        runtime.freeze()
        if not _holds_a_lock_on(lock):
            return
        runtime.thaw()
        time.sleep(0.005)
    raise AssertionError("the owner held the state lock at every one of 200 freezes")


def test_a_frozen_owner_woken_after_a_takeover_stops_and_nothing_it_wrote_is_loaded(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    spec_file = write_spec_file(tmp_path / "d.json", _spec(root, epochs=8))
    with _runtime(tmp_path, spec_file, root, "old.log") as old:
        old.wait_for(r"saved step-", timeout=120)
        _freeze_outside_the_state_lock(old, root / "d")
        with _runtime(tmp_path, spec_file, root, "new.log") as new:
            new.wait_for(r"took job 'd' over .*expired", timeout=60)
            new.wait_for(r"resuming from|fresh start", timeout=60)
            old.thaw()
            assert old.wait(timeout=60) == 4, old.output()  # LeaseLost: it stopped writing
            assert "taken over" in old.output()
            assert new.wait(timeout=300) == 0, new.output()
    state = StateFile(root / "d", Storage()).read()
    assert state is not None and state.status.value == "completed"
    store = CheckpointStore(root / "d", Storage())
    for session in state.sessions:
        if session.resumed_from and session.resumed_from in store.list_names():
            manifest = store.read_manifest(session.resumed_from)
            assert not written_after_fencing(state, manifest.generation, manifest.created_at)
    assert_exactly_equal(final_payload(root / "d"), _reference(tmp_path, epochs=8))


@pytest.mark.parametrize("how", ["stop", "deadline"])
def test_a_session_that_ends_leaves_its_newest_checkpoint_under_the_root(
        tmp_path: Path, how: str) -> None:
    root = tmp_path / "root"
    overrides: dict[str, Any] = {"epochs": 40}
    env = {}
    if how == "deadline":  # a 30 s budget (300 s at a time scale of 10), from the start
        overrides.update(epochs=400, platform="local", budget_s=300.0, deadline_margin_s=0.0)
        env["COLABRUN_TIME_SCALE"] = "10"
    spec_file = write_spec_file(tmp_path / "d.json", _spec(root, **overrides))
    with _runtime(tmp_path, spec_file, root, "first.log", **env) as first:
        first.wait_for(r"saved step-", timeout=120)
        if how == "stop":
            first.send_signal(signal.SIGINT)  # Ctrl-C: save, upload, stop
        assert first.wait(timeout=120) == 3, first.output()
        said = first.output()
    assert ("stopped (deadline)" if how == "deadline" else "stopped (interrupted") in said, said
    newest = _newest_under_root(root)
    assert newest is not None and f"durable under the root: {newest}" in said, said
    with _runtime(tmp_path, spec_file, root, "second.log", **env) as second:
        match = second.wait_for(r"resuming from (step-\d+-g\d+)", timeout=120)
        assert match[1] == newest
        second.kill()
