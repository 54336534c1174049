"""Tier 3: random augmentation in DataLoader workers, SIGKILLed mid-epoch, resumed exactly.

The job (tests/augment_job.py) draws from torch, NumPy and Python's ``random`` in
``Dataset.__getitem__``; its worker count comes from the environment, so a
resumed session may use another one with the same spec. Each test kills a real
``colabrun run`` with COLABRUN_KILL_AT, removes the runtime's local folder (so
only the root's checkpoints are left, as on a fresh Colab runtime), resumes in
a fresh process and compares every tracked tensor with an uninterrupted run
with ``num_workers=0`` (in this process: the reference needs no kill): the draws
depend on the batch, not on who loads it.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.state.manifest import MANIFEST_NAME
from colabrun.state.model import JobState
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.augment_job import BATCH, SAMPLES, WORKERS_ENV
from tests.helpers import assert_exactly_equal, digits_spec, final_payload, run_cli, write_spec_file

pytestmark = pytest.mark.slow

NAME = "augment"
EPOCHS = 2
STEPS_PER_EPOCH = SAMPLES // BATCH
KILL_STEP = 22  # in the second epoch; the saves before it (every 5 steps) are all mid-epoch
RESUMED = re.compile(r"resuming from (step-\S+) \(step (\d+), epoch \d/2 from batch \d+;")


def _spec(root: Path) -> JobSpec:
    """Saves every 5 steps and never at an epoch's end: 12 steps an epoch, so every
    checkpoint a kill can leave is mid-epoch, and a resume from one is too. Steps of
    20 ms: the uploads to the root keep up on a loaded machine (the kill needs one)."""
    return digits_spec(root, name=NAME, entrypoint="tests.augment_job:train", epochs=EPOCHS,
                       params={"sleep_s": 0.02}, checkpoint={"every_steps": 5, "every_s": None,
                                              "at_epoch_end": False, "keep_last": 2,
                                              "max_overhead": None})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The final tracked state of an uninterrupted run loading in the training process."""
    tmp = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(WORKERS_ENV, "0")
        result = runner.run(_spec(tmp / "runs"), progress=False)
    assert result.status == "completed", result.reason
    return final_payload(tmp / "runs" / NAME)


def _state(job_dir: Path) -> JobState:
    state = StateFile(job_dir, Storage()).read()
    assert state is not None
    return state


def _killed(tmp_path: Path, workers: int) -> tuple[Path, str]:
    """Run until the kill; leave only the root. Returns the root and the checkpoint a
    resume must take: the newest committed under the root (its manifest written), recorded
    in ``state.json`` or not yet (runner/train/plan.py takes both)."""
    root = tmp_path / "runs"
    spec_file = write_spec_file(tmp_path / "spec.json", _spec(root))
    killed = run_cli("run", str(spec_file), cwd=tmp_path,
                     env={WORKERS_ENV: str(workers), "COLABRUN_KILL_AT": f"step:{KILL_STEP}"})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    shutil.rmtree(tmp_path / "local")  # a fresh runtime: the root alone
    committed = [manifest.parent.name for manifest in
                 (root / NAME / "checkpoints").glob(f"step-*/{MANIFEST_NAME}")]
    assert committed, "a checkpoint reached the root before the kill"
    return root, max(committed)  # step, then generation: the names sort so


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize(("first", "then"), [(0, 0), (2, 0), (2, 3), (3, 2)],
                         ids=lambda n: f"{n}-workers")
def test_a_run_killed_mid_epoch_resumes_exactly_with_any_worker_count(
    tmp_path: Path, reference: dict[str, Any], first: int, then: int
) -> None:
    root, newest = _killed(tmp_path, first)
    resumed = run_cli("resume", NAME, "--root", str(root), cwd=tmp_path,
                      env={WORKERS_ENV: str(then)})
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    match = RESUMED.search(resumed.stdout)
    assert match is not None, f"not a mid-epoch resume:\n{resumed.stdout}"
    name, step = match.group(1), int(match.group(2))
    session = _state(root / NAME).sessions[-1]
    assert (name, step) == (newest, session.start_step) and session.resumed_from == newest
    assert 0 < step < KILL_STEP and step % STEPS_PER_EPOCH, "after a save, mid-epoch"
    result = _state(root / NAME).result  # what the resumed session's train() returned
    assert isinstance(result, dict)
    assert result["batches_loaded_in_workers"] == (EPOCHS * STEPS_PER_EPOCH - step if then else 0)
    assert_exactly_equal(final_payload(root / NAME), reference)
