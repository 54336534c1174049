"""The lease: pure verdicts with a fake clock, fencing, and two real runners on one job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import FakeClock
from colabrun.runner.save.saver import Saver
from colabrun.runner.train.position import Position
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.lease import (
    LeaseHeld,
    LeaseLost,
    Owner,
    Verdict,
    Watch,
    check_fence,
    fence_of,
    fenced_at,
    judge,
    take,
    watch,
    written_after_fencing,
)
from colabrun.state.model import Lease, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import begin_session, new_job
from tests.helpers import REPO, digits_spec, run_cli, write_spec_file

ME = Owner("runtime-a", "vm-a", 100)


def lease(owner: str = "runtime-b", pid: int = 200, heartbeat_at: float = 1000.0,
          duration_s: float = 600.0) -> Lease:
    return Lease(owner=owner, host="vm", pid=pid, generation=3, acquired_at=900.0,
                 heartbeat_at=heartbeat_at, duration_s=duration_s)


@pytest.mark.parametrize(
    ("current", "now", "alive", "verdict"),
    [
        (None, 1000.0, True, Verdict.FREE),
        (lease("runtime-a", 100), 1000.0, True, Verdict.MINE),
        (lease("runtime-a", 101), 1000.0, False, Verdict.OWNER_DEAD),
        (lease("runtime-a", 101), 1000.0, True, Verdict.HELD),
        (lease(), 1599.0, True, Verdict.HELD),
        (lease(), 1600.5, True, Verdict.EXPIRED),
        (lease(pid=100), 1000.0, False, Verdict.HELD),  # same pid, other runtime: not ours
    ],
)
def test_judge(current: Lease | None, now: float, alive: bool, verdict: Verdict) -> None:
    assert judge(current, ME, now=now, is_alive=lambda pid: alive) is verdict


@pytest.mark.parametrize(
    ("current", "now", "news"),
    [
        (lease(), 1010.0, Watch.WAIT),                     # no heartbeat yet: still may come
        (lease(heartbeat_at=1011.0), 1012.0, Watch.LIVE),  # it moved: the owner lives
        (lease(), 1600.5, Watch.FREE),                     # it never moved: the runtime is gone
        (None, 1010.0, Watch.FREE),                        # released meanwhile
    ],
)
def test_watching_a_foreign_lease(current: Lease | None, now: float, news: Watch) -> None:
    assert watch(lease(), current, ME, now=now, is_alive=lambda pid: True) is news


def test_a_lease_taken_by_a_third_runner_meanwhile_is_live() -> None:
    third = lease().model_copy(update={"token": "other"})
    assert watch(lease(), third, ME, now=1010.0, is_alive=lambda pid: True) is Watch.LIVE


def test_what_a_fenced_generation_wrote_after_the_takeover_is_untrusted() -> None:
    clock = FakeClock()
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=clock.time())
    first = begin_session(take(state, ME, now=clock.time(), duration_s=60), runtime_id="a",
                          host="vm-a", pid=1, device="cpu", resumed_from=None, now=clock.time())
    assert fenced_at(first, 1) is None  # nobody newer: everything generation 1 wrote counts
    clock.advance(100)
    second = begin_session(take(first, Owner("b", "vm-b", 7), now=clock.time(), duration_s=60),
                           runtime_id="b", host="vm-b", pid=7, device="cpu", resumed_from=None,
                           now=clock.time())
    assert fenced_at(second, 1) == clock.time()
    assert not written_after_fencing(second, 1, clock.time() - 1)  # before: a real checkpoint
    assert written_after_fencing(second, 1, clock.time() + 5)      # a frozen owner, woken
    assert not written_after_fencing(second, 2, clock.time() + 5)  # the new owner's own


def test_take_bumps_the_generation_and_fencing_catches_the_old_owner() -> None:
    clock = FakeClock()
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=clock.time())
    first = take(state, ME, now=clock.time(), duration_s=60)
    second = take(first, Owner("runtime-b", "vm-b", 7), now=clock.time(), duration_s=60)
    assert (first.generation, second.generation) == (1, 2)
    check_fence(second, fence_of(second))
    with pytest.raises(LeaseLost, match="taken over"):
        check_fence(second, fence_of(first))


def test_rivals_that_read_the_same_stale_state_fence_each_other() -> None:
    """F15 across runtimes: no common lock, both take generation 1 from one stale view."""
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=0.0)
    mine = take(state, ME, now=1.0, duration_s=60)
    theirs = take(state, Owner("runtime-b", "vm-b", 7), now=1.0, duration_s=60)
    assert mine.generation == theirs.generation == 1
    with pytest.raises(LeaseLost):  # their write landed last: I must stop
        check_fence(theirs, fence_of(mine))


def _spec(root: Path, **kw: Any) -> JobSpec:
    def train(run: Any) -> None:
        model = torch.nn.Linear(1, 1)
        run.track(model=model)
        for _ in run.epochs():
            for _batch in run.batches(range(3)):
                run.step()

    fields: dict[str, Any] = {"epochs": 1, **kw}
    return JobSpec(name="leased", entrypoint=train, root=str(root), **fields)


def test_a_live_lease_of_this_runtime_is_refused_at_once_and_nothing_changes(
        tmp_path: Path) -> None:
    from colabrun.runner.platform import runtime_id

    runner.run(_spec(tmp_path))
    statefile = StateFile(tmp_path / "leased", Storage())
    state = statefile.read()
    assert state is not None
    live = lease(owner=runtime_id(), pid=os.getppid(), heartbeat_at=time.time())
    foreign = state.model_copy(update={"status": Status.RUNNING, "lease": live})
    statefile.write(foreign)
    before = (tmp_path / "leased" / "state.json").read_bytes()
    with pytest.raises(LeaseHeld, match=rf"pid {os.getppid()} on vm .*takeover=True") as info:
        runner.run(_spec(tmp_path, epochs=2))
    assert info.value.exit_code == 4
    assert (tmp_path / "leased" / "state.json").read_bytes() == before
    result = runner.run(_spec(tmp_path, epochs=2), takeover=True)
    assert result.status is Status.COMPLETED and result.epochs_done == 2


def test_an_expired_lease_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    runner.run(_spec(tmp_path))
    statefile = StateFile(tmp_path / "leased", Storage())
    state = statefile.read()
    assert state is not None
    stale = lease(heartbeat_at=time.time() - 601, duration_s=600)
    statefile.write(state.model_copy(update={"status": Status.RUNNING, "lease": stale}))
    result = runner.run(_spec(tmp_path, epochs=2))
    assert result.status is Status.COMPLETED
    assert "took job 'leased' over from pid 200" in capsys.readouterr().out
    final = statefile.read()
    assert final is not None and final.lease is None  # released at the end
    assert final.generation == state.generation + 1


def test_a_fenced_saver_writes_no_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock()
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    statefile = StateFile(job_dir, Storage())
    state = take(new_job(name="j", fingerprint="f", defining={}, epochs_total=1,
                         now=clock.time()), ME, now=clock.time(), duration_s=60)
    statefile.write(take(state, Owner("b", "vm-b", 1), now=clock.time(), duration_s=60))
    store = CheckpointStore(job_dir, Storage())
    local = CheckpointStore(tmp_path / "local", Storage())
    saver = Saver(local, store, statefile, keep_last=2, fence=fence_of(state), clock=clock)
    try:
        saver.save({}, Position(epoch=0, batch=1, step=1), "test")  # local: fine
        with pytest.raises(LeaseLost):
            saver.finish(timeout_s=10)  # the upload met the fence
        with pytest.raises(LeaseLost):
            saver.save({}, Position(epoch=0, batch=2, step=2), "test")
    finally:
        saver.close()
    assert store.list_names() == []


def _slow_job_spec(root: Path) -> Path:
    spec = digits_spec(root, name="busy", epochs=50)
    return write_spec_file(root.parent / "busy.json", spec)


@pytest.mark.slow
def test_second_runner_refuses_then_takes_over_after_a_kill(tmp_path: Path) -> None:
    """F3/F15 with real processes: one writer at a time, and a dead owner is detected."""
    root = tmp_path / "runs"
    spec_file = _slow_job_spec(root)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "colabrun", "run", str(spec_file)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        checkpoints = root / "busy" / "checkpoints"
        deadline = time.monotonic() + 180
        while not any(checkpoints.glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(checkpoints.glob("step-*")), "the first runner never saved"
        second = run_cli("run", str(spec_file), cwd=tmp_path)
        assert second.returncode == 4, second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.poll() is None, "the first runner must be untouched"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = run_cli("run", str(spec_file), cwd=tmp_path,
                    env={"COLABRUN_KILL_AT": "step:20"})  # take over, then die again
    assert third.returncode == -signal.SIGKILL
    assert f"took job 'busy' over from pid {first.pid}" in third.stdout
    assert "owner dead" in third.stdout


def test_a_saver_that_cannot_refresh_its_lease_warns_once_and_goes_on(tmp_path: Path) -> None:
    """The saver's lease keeper on a root that fails: one warning, no error (training goes
    on locally), and a lease lost later still stops it."""
    import errno
    import io

    from colabrun.runner.display.console import Console
    from colabrun.state.lease import LeaseLost as Lost

    clock = FakeClock()
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    statefile = StateFile(job_dir, Storage())
    state = take(new_job(name="j", fingerprint="f", defining={}, epochs_total=1,
                         now=clock.time()), ME, now=clock.time(), duration_s=60)
    statefile.write(state)
    out = io.StringIO()
    saver = Saver(CheckpointStore(tmp_path / "local", Storage()), CheckpointStore(job_dir,
                  Storage()), statefile, keep_last=2, fence=fence_of(state), clock=clock,
                  console=Console(out=out))

    class FailingRoot:
        def update(self, change: Any) -> Any:
            raise OSError(errno.EIO, "Input/output error")

    try:
        saver.lease.store = FailingRoot()
        saver.lease.refresh()
        saver.lease.refresh()
        assert out.getvalue().count("cannot refresh the lease") == 1
        saver.lease.store = statefile
        statefile.write(take(state, Owner("b", "vm-b", 1), now=clock.time(), duration_s=60))
        with pytest.raises(Lost):
            saver.lease.refresh()
    finally:
        saver.close()
