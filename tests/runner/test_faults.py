"""The public fault API's durable-state faults and clock, each driving a real run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun import runner
from colabrun.jobs.errors import StateCorrupt, TrainingError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import FakeClock
from colabrun.runner.faults import (
    ALL_POINTS,
    FaultSpecError,
    HangAt,
    InjectedFault,
    JumpingClock,
    KillAt,
    RaiseAt,
    corrupt_state,
    plant_stale_lease,
)
from colabrun.runner.watch.deadline import Deadline
from colabrun.state.lease import Owner, Verdict, judge
from colabrun.state.model import Lease, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage


def train(run: Any) -> None:
    model = torch.nn.Linear(2, 1)
    run.track(model=model)
    for _ in run.epochs():
        for _x in run.batches(range(4)):
            run.step()


def spec(root: Path, epochs: int = 1) -> JobSpec:
    return JobSpec(name="f", entrypoint=train, epochs=epochs, root=str(root),
                   local_dir=str(root / "local"), supervise=False)


@pytest.mark.parametrize("how", ["garbage", "truncate"])
def test_corrupt_state_is_refused_not_replaced(tmp_path: Path, how: str) -> None:
    runner.run(spec(tmp_path))
    corrupt_state(tmp_path / "f", how)
    damaged = (tmp_path / "f" / "state.json").read_bytes()
    with pytest.raises(StateCorrupt, match="colabrun repair"):
        runner.run(spec(tmp_path, epochs=2))
    assert (tmp_path / "f" / "state.json").read_bytes() == damaged


def test_a_dead_runtimes_stale_lease_is_taken_over(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    runner.run(spec(tmp_path))
    plant_stale_lease(tmp_path / "f", age_s=601)
    result = runner.run(spec(tmp_path, epochs=2))
    assert result.status is Status.COMPLETED
    assert "took job 'f' over from pid 999999 on gone-vm" in capsys.readouterr().out


def test_a_fresh_lease_of_a_dead_runtime_is_waited_out_then_taken_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner.run(spec(tmp_path))
    plant_stale_lease(tmp_path / "f", age_s=1, duration_s=3)
    started = time.monotonic()
    result = runner.run(spec(tmp_path, epochs=2))
    assert result.status is Status.COMPLETED
    out = capsys.readouterr().out
    assert "is held by gone-vm" in out and "waiting up to 2 s" in out
    assert "took job 'f' over from pid 999999 on gone-vm" in out and "expired" in out
    assert time.monotonic() - started >= 1.5, "the heartbeat was watched for, not ignored"


def test_a_wall_clock_jump_ages_a_lease_and_shortens_a_deadline() -> None:
    clock = JumpingClock(FakeClock())
    lease = Lease(owner="other", host="vm", pid=1, generation=1, acquired_at=clock.time(),
                  heartbeat_at=clock.time(), duration_s=600)
    me = Owner("mine", "vm2", 2)
    assert judge(lease, me, now=clock.time(), is_alive=lambda p: True) is Verdict.HELD
    clock.jump(3600)  # NTP, or a laptop waking up
    assert judge(lease, me, now=clock.time(), is_alive=lambda p: True) is Verdict.EXPIRED
    deadline = Deadline.of(started_at=clock.base.time(), budget=3000.0, margin_s=0)
    assert deadline.must_save_now(clock.time(), step_s=1, save_s=1)
    before = clock.monotonic()
    clock.jump(10, monotonic=True)
    assert clock.monotonic() - before == 10


def test_raise_and_hang_hooks(tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as info:
        runner.run(spec(tmp_path), on_point=RaiseAt("step", at_step=3))
    assert isinstance(info.value.__cause__, InjectedFault)
    state = StateFile(tmp_path / "f", Storage()).read()
    assert state is not None and state.status is Status.FAILED
    release = threading.Event()
    hang = HangAt("epoch.end", release=release)
    worker = threading.Thread(target=lambda: runner.run(spec(tmp_path / "h"), on_point=hang))
    worker.start()
    try:  # reaching the epoch end may take seconds on a loaded machine
        deadline = time.monotonic() + 120
        while not hang.fired and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.join(timeout=0.5)
        assert hang.fired and worker.is_alive(), "hung at the epoch end"
    finally:
        release.set()
        worker.join(timeout=120)
    assert not worker.is_alive()


def test_unknown_points_are_refused() -> None:
    with pytest.raises(FaultSpecError, match="known: step"):
        KillAt("nowhere")
    assert len(set(ALL_POINTS)) == len(ALL_POINTS)


@pytest.mark.parametrize(("op", "errno_"), [("write", 5), ("open", 107), ("replace", 28),
                                            ("fsync", 110)])
def test_faulty_fs_fails_the_nth_call_with_the_chosen_errno(tmp_path: Path, op: str,
                                                            errno_: int) -> None:
    from colabrun.runner.faults import Fail, FaultyFs

    fs = FaultyFs(fail=[Fail(op, nth=2, errno=errno_)])
    storage = Storage(fs=fs, attempts=1)
    storage.write_bytes(tmp_path / "first", b"x")
    storage.replace(tmp_path / "first", tmp_path / "first.moved")
    with pytest.raises(OSError) as info:  # the second call of `op` fails
        storage.write_bytes(tmp_path / "second", b"y")
        storage.replace(tmp_path / "second", tmp_path / "second.moved")
    assert info.value.errno == errno_
    assert (op, str(tmp_path / "first")) in fs.calls or op in {c[0] for c in fs.calls}
