"""``colabrun chaos``: exact on the built-in example, diverged on broken training code."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabrun.jobs.spec import JobSpec
from colabrun.runner.commands.chaos import first_difference, first_metric_difference
from tests.helpers import REPO, run_cli, write_spec_file


def test_first_difference_names_the_first_tensor() -> None:
    import torch

    a = {"model": {"w": torch.ones(2), "b": torch.zeros(1)}, "opt": {"lr": 0.1}}
    b = {"model": {"w": torch.ones(2), "b": torch.ones(1)}, "opt": {"lr": 0.1}}
    assert first_difference(a, a) is None
    assert first_difference(a, b) == "model.b"
    assert first_difference(a, {**a, "opt": {"lr": 0.2}}) == "opt.lr"


def test_first_metric_difference_ignores_bookkeeping() -> None:
    a = [{"step": 1, "loss": 1.0, "time": 5.0}, {"step": 2, "loss": 0.5, "session": 0}]
    b = [{"step": 1, "loss": 1.0, "time": 9.0}, {"step": 2, "loss": 0.4, "session": 1}]
    assert first_metric_difference(a, a) is None
    assert first_metric_difference(a, b) == 2


@pytest.mark.slow
def test_chaos_on_the_example_is_exact(tmp_path: Path) -> None:
    done = run_cli("chaos", str(REPO / "jobs/examples/digits.yaml"), "--kills", "5",
                   "--epochs", "2", "--scratch", str(tmp_path), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: exact" in done.stdout
    assert done.stdout.count("\nkill ") == 5
    real_root = tmp_path / "colabrun-runs"
    assert not real_root.exists(), "chaos never touches the job's real root"


@pytest.mark.slow
@pytest.mark.parametrize(("entrypoint", "tensor", "cause"), [
    ("tests.broken_jobs:untracked_scheduler", "model.", None),
    ("tests.broken_jobs:own_generator", "model.",
     "the runs warned: an untracked numpy.random.Generator 'rng' in own_generator()"),
])
def test_chaos_catches_broken_training_code(tmp_path: Path, entrypoint: str,
                                            tensor: str, cause: str | None) -> None:
    spec = JobSpec(name="broken", entrypoint=entrypoint, epochs=4,
                   checkpoint={"every_steps": 2, "every_s": None})
    spec_file = write_spec_file(tmp_path / "spec.json", spec)
    done = run_cli("chaos", str(spec_file), "--kills", "3", "--seed", "1",
                   "--scratch", str(tmp_path / "scratch"), cwd=tmp_path, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "verdict: diverged" in done.stdout
    assert f"first tensor that differs: {tensor}" in done.stdout
    assert "usual causes" in done.stdout
    if cause is not None:  # named before the usual causes
        assert cause in done.stdout
        assert done.stdout.index(cause) < done.stdout.index("usual causes")
    else:
        assert "the runs warned" not in done.stdout


def test_the_report_as_json_for_scripts() -> None:
    import json

    from colabrun.runner.commands.chaos import ChaosReport, Kill

    report = ChaosReport(exact=False, kills=[Kill("mid-step", "step", 25, 21, 0.1)],
                         first_tensor="model.bias", checkpoints_reference=9,
                         checkpoints_chaos=11, reference_s=6.2, chaos_s=17.4)
    data = json.loads(json.dumps(report.as_json()))
    assert data["verdict"] == "diverged" and data["first_tensor"] == "model.bias"
    assert data["kills"] == [{"kind": "mid-step", "point": "step", "step": 25,
                              "resumed_step": 21, "lost_s": 0.1, "redone_steps": 4}]
