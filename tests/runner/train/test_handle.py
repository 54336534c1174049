"""Tier 1/2: the run handle in-process, interrupted at many points and resumed.

An interruption here is an exception raised from the fault hook: cheaper than a
SIGKILL (tests/runner/test_resume_exact.py does those), so it can sweep every kind of
resume point: mid-epoch, first and last batch, epoch boundary, before any save.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun import runner
from colabrun.jobs.errors import HandleError, TrainingError
from colabrun.jobs.handle import TrainingRun
from colabrun.jobs.spec import JobSpec
from colabrun.runner.save.task import PROCESS, THREAD
from colabrun.runner.train.data import remaining_batches
from colabrun.runner.train.handle import save_telemetry
from colabrun.runner.train.saving import SaveTelemetry
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, digits_spec, final_payload
from tests.rng_heavy_job import train as rng_heavy_train

STEPS_PER_EPOCH = 15  # 120 samples, batch 8


class Crash(Exception):
    """Stands for a runtime dying at a fault point."""


def crash_at(point: str, nth: int) -> Any:
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Crash(f"{point} #{nth}")

    return hook


def heavy_spec(root: Path, **overrides: Any) -> JobSpec:
    fields: dict[str, Any] = dict(
        name="heavy", entrypoint=rng_heavy_train, epochs=3, seed=3, params={"lr": 0.01},
        supervise=False,  # in-process here; tests/runner/watch/test_supervisor.py covers workers
        checkpoint={"every_steps": 4, "every_s": None, "at_epoch_end": True, "keep_last": 2},
    )
    fields.update(overrides)
    return JobSpec(root=str(root), local_dir=str(root / "local"), **fields)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ref")
    result = runner.run(heavy_spec(root))
    assert result.status is Status.COMPLETED and result.value == 3 * STEPS_PER_EPOCH
    return final_payload(root / "heavy")


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("step", 1), ("step", 4), ("step", 5), ("step", 14), ("step", 15), ("step", 16),
        ("step", 23), ("step", 31), ("step", 44), ("epoch.end", 1), ("epoch.end", 2),
        ("save.payload_written", 2), ("state.tmp_written", 3), ("save.renamed", 4),
    ],
)
def test_interrupted_anywhere_resumes_exactly(
    tmp_path: Path, reference: dict[str, Any], point: str, nth: int
) -> None:
    spec = heavy_spec(tmp_path)
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at(point, nth))
    result = runner.run(spec)
    assert result.status is Status.COMPLETED
    assert result.value == 3 * STEPS_PER_EPOCH, "run.extras must survive the resume"
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def test_twice_interrupted_resumes_exactly(tmp_path: Path, reference: dict[str, Any]) -> None:
    spec = heavy_spec(tmp_path)
    for nth in (7, 12):
        with pytest.raises((Crash, TrainingError)):
            runner.run(spec, on_point=crash_at("step", nth))
    runner.run(spec)
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def test_a_broken_resume_would_be_caught(tmp_path: Path, reference: dict[str, Any]) -> None:
    """The comparison is not vacuous: a different seed ends with different weights."""
    runner.run(heavy_spec(tmp_path, seed=4))
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def _train_tracking(names: list[str]) -> Any:
    def train(run: Any) -> None:
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        objects = {"model": model, "optimizer": opt}
        run.track(**{n: objects[n] for n in names})
        for _ in run.epochs():
            for x in run.batches([torch.ones(1, 2)] * 4):
                model(x).sum().backward()
                opt.step()
                run.step()

    return train


def test_untracking_an_object_on_resume_is_refused(tmp_path: Path) -> None:
    spec = JobSpec(name="t", entrypoint=_train_tracking(["model", "optimizer"]), epochs=2,
                   root=str(tmp_path), checkpoint={"every_steps": 1}, supervise=False)
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at("step", 6))
    fewer = spec.model_copy(update={"entrypoint": _train_tracking(["model"])})
    with pytest.raises(HandleError, match=r"holds state for \['optimizer'\]"):
        runner.run(fewer, force=True)


def test_tracking_something_without_state_dict_is_refused(tmp_path: Path) -> None:
    def train(run: Any) -> None:
        run.track(model=object())

    with pytest.raises(HandleError, match=r"has no state_dict\(\)"):
        runner.run(JobSpec(name="t", entrypoint=train, epochs=1, root=str(tmp_path),
                           supervise=False))


def test_batches_skip_without_loading(tmp_path: Path) -> None:
    loaded: list[int] = []

    class Recording(torch.utils.data.Dataset[int]):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, index: int) -> int:
            loaded.append(index)
            return index

    loader = torch.utils.data.DataLoader(Recording(), batch_size=4, shuffle=True)
    full = [b.tolist() for b in remaining_batches(loader, seed=1, epoch=2, skip=0)]
    loaded.clear()
    rest = [b.tolist() for b in remaining_batches(loader, seed=1, epoch=2, skip=3)]
    assert rest == full[3:]
    assert sorted(loaded) == sorted(i for batch in full[3:] for i in batch)
    other_epoch = [b.tolist() for b in remaining_batches(loader, seed=1, epoch=3, skip=0)]
    assert other_epoch != full


def test_batches_of_a_sequence_are_sliced() -> None:
    assert list(remaining_batches(["a", "b", "c"], seed=0, epoch=0, skip=2)) == ["c"]


def test_a_one_epoch_job_is_saved_once_at_its_end(tmp_path: Path) -> None:
    """The epoch-end save is still being written when training ends: the session's
    final save waits for it instead of saving the same step again (``...-r1``)."""
    root = tmp_path / "runs"
    spec = digits_spec(root, epochs=1, checkpoint={
        "every_steps": None, "every_s": None, "at_epoch_end": True, "max_overhead": None})
    result = runner.run(spec)
    assert result.status is Status.COMPLETED and result.global_step == 45
    names = sorted(p.name for p in (root / "digits" / "checkpoints").glob("step-*"))
    assert names == ["step-000000045-g0001"]


def test_an_epoch_end_is_saved_once(tmp_path: Path) -> None:
    """every_steps dividing the epoch: the periodic save yields to the epoch-end one."""
    spec = JobSpec(name="t", entrypoint=_train_tracking(["model", "optimizer"]), epochs=2,
                   root=str(tmp_path),
                   checkpoint={"every_steps": 2, "keep_last": 10, "max_overhead": None},
                   supervise=False, local_dir=str(tmp_path / "local"))
    saves: list[str] = []
    spec = spec.model_copy(update={"name": "t2"})
    runner.run(spec, on_point=lambda p: saves.append(p) if p == "save.manifest_written" else None)
    local = list((tmp_path / "local").rglob("step-*"))
    assert not [p for p in local if "-r" in p.name], "no second save at the same step"
    # 8 steps, every 2 and every epoch end (4 and 8): one local commit per even step,
    # plus the uploads (a superseded one may be skipped while another is in flight)
    assert 4 <= len(saves) <= 8
    names = sorted(p.name for p in (tmp_path / "t2" / "checkpoints").glob("step-*"))
    assert names[-1] == "step-000000008-g0001" and not [n for n in names if "-r" in n]


def test_torn_checkpoints_leave_the_record_and_progress_follows(tmp_path: Path) -> None:
    spec = heavy_spec(tmp_path)
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at("step", 23))
    job_dir = tmp_path / "heavy"
    statefile = StateFile(job_dir, Storage())
    before = statefile.read()
    assert before is not None and before.latest_checkpoint is not None
    torn = before.latest_checkpoint.name
    (job_dir / "checkpoints" / torn / "state.pt").write_bytes(b"")
    shutil.rmtree(tmp_path / "local")  # a fresh runtime: no local copies
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at("step", 1))  # resumes, then dies at once
    after = statefile.read()
    assert after is not None
    assert torn not in [r.name for r in after.checkpoints]
    assert after.progress.global_step == max(r.step for r in after.checkpoints)
    assert after.progress.global_step < before.progress.global_step


def test_nothing_verifies_means_progress_starts_over(tmp_path: Path) -> None:
    spec = heavy_spec(tmp_path)
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at("step", 23))
    for payload in (tmp_path / "heavy" / "checkpoints").glob("step-*/state.pt"):
        payload.write_bytes(b"")
    shutil.rmtree(tmp_path / "local")
    with pytest.raises((Crash, TrainingError)):
        runner.run(spec, on_point=crash_at("step", 1))
    state = StateFile(tmp_path / "heavy", Storage()).read()
    assert state is not None and state.checkpoints == ()
    assert state.progress.global_step == 0


def test_the_handle_exposes_the_training_run_protocol_only(tmp_path: Path) -> None:
    """What the training function can reach is the contract: no saver, no save costs."""
    seen: list[set[str]] = []

    def train(run: Any) -> None:
        seen.append({name for name in dir(run) if not name.startswith("_")})
        run.track(model=torch.nn.Linear(1, 1))
        for _ in run.epochs():
            for _batch in run.batches(range(2)):
                run.step()

    runner.run(JobSpec(name="t", entrypoint=train, epochs=1, root=str(tmp_path),
                       supervise=False, local_dir=str(tmp_path / "local")))
    protocol = {name for name in vars(TrainingRun) if not name.startswith("_")}
    assert seen == [protocol | set(TrainingRun.__annotations__)]
    assert {"saver", "save_cost", "save_stalls", "close"}.isdisjoint(seen[0])


def test_what_saves_cost_is_read_beside_the_handle(tmp_path: Path) -> None:
    seen: list[SaveTelemetry] = []

    def train(run: Any) -> None:
        run.track(model=torch.nn.Linear(2, 1))
        for _ in run.epochs():
            for _batch in run.batches(range(4)):
                run.step()
        seen.append(save_telemetry(run))

    spec = JobSpec(name="t", entrypoint=train, epochs=2, root=str(tmp_path), supervise=False,
                   checkpoint={"every_steps": 2, "keep_last": 10, "max_overhead": None},
                   local_dir=str(tmp_path / "local"))
    runner.run(spec)
    [telemetry] = seen
    assert len(telemetry.stalls) == 4 and all(s > 0 for s in telemetry.stalls), \
        "steps 2, 4 (the epoch end), 6, 8"
    assert telemetry.cost.stall_s is not None
    assert telemetry.last_write is not None and telemetry.last_write.mode in (THREAD, PROCESS)

