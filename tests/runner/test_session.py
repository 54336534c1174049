"""One session of a job (runner/session.py): how many times it writes ``state.json`` on the
root before training starts. On Drive each write is a lock, a read, a write, an fsync and a
rename, so a session makes two: one that creates the job (if new), takes its lease and opens
the session; one that records where training resumes from."""

from __future__ import annotations

import io
import os
from pathlib import Path

import psutil
import pytest

from colabrun import runner
from colabrun.runner.clock import FakeClock
from colabrun.runner.display.console import Console
from colabrun.runner.faults import InjectedFault, RaiseAt
from colabrun.runner.platform import runtime_id
from colabrun.runner.session import _warn_if_budget_spent
from colabrun.runner.watch.deadline import Deadline
from colabrun.runner.watch.worker_process import WorkerProcess
from colabrun.state.lease import LeaseHeld
from colabrun.state.model import Lease, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import digits_spec


class StateWritesBeforeFirstStep:
    """A fault hook that counts ``state.json`` writes until the first step."""

    def __init__(self) -> None:
        self.writes = 0
        self.stepped = False

    def __call__(self, point: str) -> None:
        if point == "step":
            self.stepped = True
        elif point == "state.replaced" and not self.stepped:
            self.writes += 1


def test_a_new_job_writes_its_state_twice_before_the_first_step(tmp_path: Path) -> None:
    count = StateWritesBeforeFirstStep()
    result = runner.run(digits_spec(tmp_path / "runs", epochs=1), on_point=count)
    assert result.status is Status.COMPLETED
    assert count.stepped and count.writes == 2


def test_a_resumed_job_writes_its_state_twice_before_the_first_step(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    runner.run(digits_spec(root, epochs=1))
    count = StateWritesBeforeFirstStep()
    result = runner.run(digits_spec(root, epochs=2), on_point=count)
    assert result.status is Status.COMPLETED and result.global_step == 90
    assert count.stepped and count.writes == 2
    state = StateFile(root / "digits", Storage()).read()
    assert state is not None and len(state.sessions) == 2
    assert state.sessions[1].resumed_from is not None  # resumed, not started again


def _held_by_a_live_process(root: Path) -> None:
    """A completed one-epoch job whose lease a live process of this runtime holds."""
    runner.run(digits_spec(root, epochs=1))
    statefile = StateFile(root / "digits", Storage())
    state = statefile.read()
    assert state is not None
    held = Lease(owner=runtime_id(), host="vm-b", pid=os.getppid(),  # alive, on this runtime
                 generation=state.generation + 1, acquired_at=state.updated_at,
                 heartbeat_at=9e12, duration_s=600, token="t")
    statefile.write(state.model_copy(update={"status": Status.RUNNING, "lease": held}))


def test_a_refused_lease_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _held_by_a_live_process(root)
    before = (root / "digits" / "state.json").read_bytes()
    with pytest.raises(LeaseHeld):
        runner.run(digits_spec(root, epochs=2))
    assert (root / "digits" / "state.json").read_bytes() == before


def test_a_refused_supervised_run_leaves_no_worker_started_ahead(tmp_path: Path) -> None:
    """A supervised session starts its worker before it takes the lease (the worker imports
    torch meanwhile); a refusal kills and reaps it."""
    root = tmp_path / "runs"
    _held_by_a_live_process(root)
    started: list[WorkerProcess] = []
    start = WorkerProcess.start

    def spy() -> WorkerProcess:
        started.append(start())
        return started[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WorkerProcess, "start", staticmethod(spy))
        with pytest.raises(LeaseHeld):
            runner.run(digits_spec(root, epochs=2, supervise=True))
    [worker] = started
    assert not worker.is_running() and not worker.tasked, "killed and reaped, never tasked"
    assert not psutil.Process().children(recursive=True)


@pytest.mark.slow
def test_a_fresh_job_with_a_short_budget_trains_then_stops_durable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """budget_s: 8 with the default margin (120 s) and no save measured yet: the margin and
    the assumed save shrink to a tenth of the budget, so the job trains, then stops at
    the deadline with its checkpoint under the root (it trained 0 steps before)."""
    root = tmp_path / "runs"
    result = runner.run(digits_spec(root, epochs=10_000, platform="local", budget_s=8.0))
    assert result.status is Status.STOPPED and result.global_step > 0
    state = StateFile(root / "digits", Storage()).read()
    assert state is not None and state.checkpoints[-1].step == result.global_step
    assert "budget looks spent" not in capsys.readouterr().err


def test_a_spent_budget_set_in_the_spec_is_named_with_what_to_change(tmp_path: Path) -> None:
    clock = FakeClock(start=1000.0)
    deadline = Deadline.of(started_at=clock.time() - 20, budget=25.0, margin_s=120.0)
    out = io.StringIO()
    _warn_if_budget_spent(digits_spec(tmp_path, budget_s=25.0), deadline, clock,
                          Console(out=out))
    assert "of the spec's budget_s (25 s" in out.getvalue()
    assert "Raise budget_s, or lower deadline_margin_s" in out.getvalue()
    assert "set budget_s or platform" not in out.getvalue()


def test_lowering_epochs_below_what_a_completed_job_trained_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    runner.run(digits_spec(root, epochs=2))
    state_before = (root / "digits" / "state.json").read_bytes()
    capsys.readouterr()
    result = runner.run(digits_spec(root, epochs=1))
    assert (result.exit_code, result.trained, result.epochs_done) == (0, False, 2)
    out = capsys.readouterr().out
    assert ("job 'digits' has trained 2 epochs already; the spec's epochs: 1 asks for fewer, "
            "and a job never trains backwards: it keeps its epoch-2 model") in out
    assert (root / "digits" / "state.json").read_bytes() == state_before


def test_a_start_that_fails_after_taking_the_lease_puts_the_job_back(tmp_path: Path) -> None:
    """The write that takes the lease and opens the session fails after its rename (the
    state on the root holds the lease): the job is left as before, not ``running``."""
    root = tmp_path / "runs"
    with pytest.raises(InjectedFault):
        runner.run(digits_spec(root, epochs=1), on_point=RaiseAt("state.replaced"))
    state = StateFile(root / "digits", Storage()).read()
    assert state is not None
    assert (state.status, state.lease) == (Status.PENDING, None)
    assert state.sessions[-1].end_reason == "did not run: InjectedFault: injected"

    result = runner.run(digits_spec(root, epochs=1))  # at once: no lease to wait out
    assert result.status is Status.COMPLETED and result.global_step == 45


def test_a_failed_start_of_more_epochs_leaves_a_completed_job_resumable(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    runner.run(digits_spec(root, epochs=1))
    with pytest.raises(InjectedFault):
        runner.run(digits_spec(root, epochs=2), on_point=RaiseAt("state.replaced"))
    state = StateFile(root / "digits", Storage()).read()
    assert state is not None
    assert (state.status, state.lease) == (Status.STOPPED, None)  # not "completed": not done
    result = runner.run(digits_spec(root, epochs=2))
    assert result.status is Status.COMPLETED and result.global_step == 90
