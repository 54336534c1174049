"""Getting results out (runner/results.py and the API over it): the trained state, the
metrics, the training function's return value, read from the root alone."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import colabrun
from colabrun.jobs.errors import CheckpointError, JobNotFound, SpecError
from colabrun.jobs.examples.digits import DigitsCNN
from colabrun.jobs.spec import JobSpec
from colabrun.runner.commands.cli import main
from colabrun.runner.results import MAX_RESULT_BYTES, choose_checkpoint, storable_result
from colabrun.state.model import CheckpointRecord, JobState, Status
from colabrun.state.transitions import new_job, record_checkpoint
from tests.helpers import assert_exactly_equal, digits_spec, final_payload, finished_digits_job

NAME = "digits"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, JobSpec]]:
    root = tmp_path_factory.mktemp("results") / "runs"
    yield root, finished_digits_job(root)


# -- pure ------------------------------------------------------------------------------------


def test_a_json_return_value_is_kept_and_anything_else_is_said() -> None:
    assert storable_result({"acc": 0.9, "tags": ["a"]}) == ({"acc": 0.9, "tags": ["a"]}, None)
    assert storable_result((1, 2)) == ([1, 2], None)  # as JSON reads it back
    assert storable_result(None) == (None, None)
    value, why = storable_result(torch.zeros(2))
    assert value is None and why is not None and "not JSON" in why
    assert storable_result(float("nan"))[0] is None
    value, why = storable_result("x" * MAX_RESULT_BYTES)
    assert value is None and why is not None and f"over {MAX_RESULT_BYTES}" in why


def _with_checkpoints(*steps: int) -> JobState:
    state = new_job(name="j", fingerprint="f", defining={}, epochs_total=1, now=1.0)
    for step in steps:
        record = CheckpointRecord(name=f"step-{step:09d}-g0001", step=step, epoch=0, batch=step,
                                  generation=1, size_bytes=1, sha256="0" * 64,
                                  created_at=float(step))
        state = record_checkpoint(state, record, now=float(step))
    return state


def test_the_newest_checkpoint_first_or_the_one_asked_for() -> None:
    state = _with_checkpoints(10, 30, 20)
    assert [r.step for r in choose_checkpoint(state, None)] == [30, 20, 10]
    assert [r.step for r in choose_checkpoint(state, 20)] == [20]
    with pytest.raises(CheckpointError, match="no checkpoint at step 15; it has steps 10, 20, "
                                              "30"):
        choose_checkpoint(state, 15)
    with pytest.raises(CheckpointError, match="has no checkpoint under the root yet"):
        choose_checkpoint(_with_checkpoints(), None)


# -- the API, on a finished job --------------------------------------------------------------


def test_load_returns_the_trained_state_and_loads_it_into_a_model(
        finished: tuple[Path, JobSpec]) -> None:
    root, _ = finished
    tracked = colabrun.load(NAME, root=root)
    assert sorted(tracked) == ["model", "optimizer", "scheduler"]
    assert_exactly_equal(tracked, final_payload(root / NAME))
    model = DigitsCNN(width=8)
    colabrun.load(NAME, root=root, into={"model": model})
    assert_exactly_equal(model.state_dict(), final_payload(root / NAME)["model"])
    with pytest.raises(KeyError, match="'ema' not in the checkpoint; it tracks 'model'"):
        colabrun.load(NAME, root=root, into={"ema": model})


def test_load_of_an_older_step_and_of_unknown_jobs(finished: tuple[Path, JobSpec]) -> None:
    root, _ = finished
    state = colabrun.status(NAME, root=root)
    assert state.status is Status.COMPLETED
    oldest = state.checkpoints[0]
    tracked = colabrun.load(NAME, root=root, step=oldest.step)
    assert tracked["scheduler"]["last_epoch"] >= 0
    with pytest.raises(JobNotFound, match="no job 'nope'"):
        colabrun.load("nope", root=root)
    with pytest.raises(CheckpointError, match="no checkpoint at step 3"):
        colabrun.load(NAME, root=root, step=3)


def test_metrics_are_every_record_in_step_order(finished: tuple[Path, JobSpec]) -> None:
    root, _ = finished
    records = colabrun.metrics(NAME, root=root, frame=False)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 46))  # one epoch of 45 steps, each once
    assert any("test_accuracy" in r for r in records)


def test_a_completed_job_returns_its_value_again_when_run_again(
        finished: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]) -> None:
    root, spec = finished
    again = colabrun.run(spec)
    assert again.trained is False
    assert isinstance(again.value, dict) and 0 <= again.value["test_accuracy"] <= 1
    assert colabrun.status(NAME, root=root).result == again.value


def _returns_a_tensor(run: Any) -> Any:
    for _ in run.epochs():
        for _batch in run.batches(range(2)):
            run.step()
    return torch.zeros(2)


def test_a_return_value_that_is_not_json_is_said_not_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = JobSpec(name="t", entrypoint=_returns_a_tensor, epochs=1, root=str(tmp_path),
                   local_dir=str(tmp_path / "local"), supervise=False)
    first = colabrun.run(spec)
    assert torch.equal(first.value, torch.zeros(2))  # this run still returns it
    assert "return value is not kept in state.json: it is not JSON" in capsys.readouterr().out
    assert colabrun.run(spec).value is None


# -- the command -----------------------------------------------------------------------------


def test_export_writes_a_weights_only_state_dict_and_a_csv(
        finished: tuple[Path, JobSpec], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = finished
    out, table = tmp_path / "model.pt", tmp_path / "metrics.csv"
    assert main(["export", NAME, "--root", str(root), "--out", str(out),
                 "--metrics", str(table)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}: 'model' of step-" in said and "weights_only=True" in said
    assert_exactly_equal(torch.load(out, weights_only=True), final_payload(root / NAME)["model"])
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["step", "epoch", "session", "time"]
    assert len(rows) == len(colabrun.metrics(NAME, root=root, frame=False))


def test_export_says_what_it_needs(finished: tuple[Path, JobSpec], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = finished
    assert main(["export", NAME, "--root", str(root)]) == 2
    assert "export writes --out FILE.pt" in capsys.readouterr().err
    assert main(["export", NAME, "--root", str(root), "--out", str(tmp_path / "x.pt"),
                 "--object", "ema"]) == 2
    err = capsys.readouterr().err
    assert "'ema' not in the checkpoint; it tracks 'model', 'optimizer', 'scheduler'" in err
    assert not (tmp_path / "x.pt").exists()
    assert main(["export", "nope", "--root", str(root), "--out", "x.pt"]) == 2


# -- the best checkpoint ----------------------------------------------------------------------


def test_the_best_checkpoint_survives_rotation_and_loads(tmp_path: Path) -> None:
    """keep_last: 1 of a 4-epoch job scored by a metric that peaks early: the best stays."""
    root = tmp_path / "runs"
    spec = digits_spec(
        root, name="best", epochs=4,
        checkpoint={"every_steps": None, "every_s": None, "at_epoch_end": True,
                    "keep_last": 1, "max_overhead": None,
                    "keep_best": {"metric": "test_accuracy", "mode": "min"}})
    colabrun.run(spec)
    state = colabrun.status("best", root=root)
    scored = {r.step: r.metrics["test_accuracy"] for r in state.checkpoints}
    assert 45 * 4 in scored  # the newest, by keep_last
    worst_accuracy = min(scored.values())
    best_step = next(s for s, v in scored.items() if v == worst_accuracy)
    assert best_step < 45 * 4 and len(state.checkpoints) == 2  # kept beside the newest
    tracked = colabrun.load("best", root=root, best=True)
    assert_exactly_equal(tracked, colabrun.load("best", root=root, step=best_step))
    assert (root / "best" / "checkpoints" / state.checkpoints[0].name).is_dir()


def test_best_needs_keep_best_in_the_spec(finished: tuple[Path, JobSpec]) -> None:
    root, _ = finished
    with pytest.raises(SpecError, match="keeps no best checkpoint: set checkpoint.keep_best"):
        colabrun.load(NAME, root=root, best=True)
