"""The deadline's guess of a new job's first save (runner/train/save_guess.py): the state's
size over the root's measured write speed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from colabrun import runner
from colabrun.runner.clock import FakeClock
from colabrun.runner.display.console import Console
from colabrun.runner.faults import Fail, FaultyFs
from colabrun.runner.train.save_guess import (
    FIXED_S,
    PROBE_BYTES,
    PROBE_FOLDER,
    SaveGuess,
    WriteProbe,
    guess_save_s,
    state_bytes,
)
from colabrun.runner.watch.deadline import Deadline
from colabrun.state.model import Status
from colabrun.state.storage import Storage
from tests.helpers import digits_spec


def test_state_bytes_counts_every_tensor_of_the_tracked_state() -> None:
    model = torch.nn.Linear(10, 5)  # 55 float32 parameters
    optimizer = torch.optim.Adam(model.parameters())
    assert state_bytes({"model": model, "optimizer": optimizer}) == 55 * 4
    model(torch.ones(1, 10)).sum().backward()
    optimizer.step()  # Adam's two moments, and a step counter per parameter
    assert state_bytes({"model": model, "optimizer": optimizer}) == 3 * 55 * 4 + 2 * 4


def test_guess_is_the_fixed_cost_plus_the_bytes_at_the_measured_speed() -> None:
    assert guess_save_s(0, 1e6) == FIXED_S
    assert guess_save_s(50_000_000, 10_000_000) == FIXED_S + 5.0


def test_the_probe_measures_the_root_and_leaves_nothing(tmp_path: Path) -> None:
    slow = Storage(fs=FaultyFs(slow_write_s=0.2))  # one write call: the probe's bytes
    probe = WriteProbe(slow, tmp_path / PROBE_FOLDER, FakeClock())
    probe.start().join(30)
    assert probe.error is None
    # the fake clock never moves: the speed is the floor's, still a number
    assert probe.bytes_per_s is not None and probe.bytes_per_s > 0
    assert list(tmp_path.iterdir()) == []

    real = WriteProbe(slow, tmp_path / PROBE_FOLDER, runner.SystemClock()).start()
    real.join(30)
    assert real.bytes_per_s is not None and real.bytes_per_s <= PROBE_BYTES / 0.2
    assert list(tmp_path.iterdir()) == []


def test_a_probe_that_fails_gives_no_guess(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    probe = WriteProbe(Storage(attempts=1), tmp_path / "file" / PROBE_FOLDER, FakeClock())
    probe.start().join(30)
    assert probe.bytes_per_s is None and isinstance(probe.error, OSError)


class _Measured(WriteProbe):
    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s


def _tracked() -> dict[str, torch.nn.Module]:
    return {"model": torch.nn.Linear(1000, 1000)}  # 4 004 000 bytes


def test_the_guess_waits_for_the_probe_then_counts_the_state_once() -> None:
    clock = FakeClock()
    probe = _Measured(None)
    said: list[str] = []
    guess = SaveGuess(probe, Deadline(ends_at=None), clock, said.append)
    assert guess.seconds(_tracked(), None) is None
    probe.bytes_per_s = 1_001_000.0
    assert guess.seconds(_tracked(), None) == pytest.approx(FIXED_S + 4.0)
    assert guess.seconds({}, None) == pytest.approx(FIXED_S + 4.0)  # counted once
    assert said == []  # no budget: nothing to say


def test_a_save_that_does_not_fit_in_the_budget_is_said_plainly() -> None:
    clock = FakeClock()
    deadline = Deadline.of(started_at=clock.time(), budget=30.0, margin_s=120.0)  # margin 3 s
    out = io.StringIO()
    guess = SaveGuess(_Measured(200_000.0), deadline, clock, Console(out=out).warn)
    clock.advance(10)
    seconds = guess.seconds(_tracked(), 0.1)  # 4 MB at 200 kB/s: ~21 s, 20 s left
    assert seconds == pytest.approx(FIXED_S + 20.02)
    said = out.getvalue()
    assert "one save of this job's state (4.0 MB at 200.0 KB/s to the root, measured) " \
           "takes about 21 s, and this runtime's budget has 20 s left" in said
    assert "Raise budget_s" in said
    assert deadline.must_save_now(clock.time(), step_s=0.1, save_s=seconds)


def _probe_writes(root: Path, spec_fields: dict[str, object]) -> int:
    """Train; how many writes went to the probe's folder (a rule that never fires counts)."""
    watch = Fail("write", nth=10**9, path_contains=PROBE_FOLDER)
    result = runner.run(digits_spec(root, **{"epochs": 1, **spec_fields}),
                        storage=Storage(fs=FaultyFs(fail=[watch])))
    assert result.status is Status.COMPLETED
    assert not (root / "digits" / "checkpoints" / PROBE_FOLDER).exists()  # cleaned up
    return watch.seen


def test_only_a_new_job_with_a_budget_probes_the_root(tmp_path: Path) -> None:
    assert _probe_writes(tmp_path / "a", {"budget_s": 3600.0}) == 1
    assert _probe_writes(tmp_path / "b", {}) == 0  # no budget here: no deadline to guess for
    assert _probe_writes(tmp_path / "a", {"budget_s": 3600.0, "epochs": 2}) == 0  # learned
