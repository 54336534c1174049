"""Tier 3: loops that were not exact before issue 15, SIGKILLed mid-epoch and resumed.

Gradient accumulation across batches (and across an epoch's end), generators the user
owns (each kind), a ``DataLoader`` built with ``generator=``, a torchdata
``StatefulDataLoader``. Each kill is real (``COLABRUN_KILL_AT``, or the job killing
itself after a batch, before its ``run.step()``), the resume runs in a fresh process,
and every tracked tensor is compared with ``torch.equal`` against an uninterrupted run.
Each test also checks that the resume started mid-epoch from a committed checkpoint
after the first step, so that a silent restart from scratch fails.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from colabrun.jobs.spec import JobSpec
from colabrun.state.manifest import MANIFEST_NAME
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, final_payload, run_cli, write_spec_file

pytestmark = pytest.mark.slow

NAME = "exact"
RESUMED = re.compile(r"resuming from (step-\d+-g\d+) \(step (\d+), epoch \d+/\d+ from batch (\d+)")


def spec(root: Path, entrypoint: str, params: dict[str, Any], every_steps: int) -> JobSpec:
    return JobSpec.model_validate({
        "name": NAME, "entrypoint": f"tests.exact_jobs:{entrypoint}", "epochs": 3, "seed": 11,
        "params": params, "root": str(root), "local_dir": str(root.parent / "local"),
        "supervise": False,
        "checkpoint": {"every_steps": every_steps, "every_s": None, "at_epoch_end": True,
                       "keep_last": 2, "max_overhead": None},
    })


def uninterrupted(folder: Path, job: JobSpec) -> dict[str, Any]:
    spec_file = write_spec_file(folder / "spec.json", job.model_copy(
        update={"root": str(folder / "runs"), "local_dir": str(folder / "local")}))
    done = run_cli("run", str(spec_file), cwd=folder)
    assert done.returncode == 0, done.stderr + done.stdout
    return final_payload(folder / "runs" / NAME)


def killed_then_resumed(folder: Path, job: JobSpec, env: dict[str, str]) -> dict[str, Any]:
    """Run until killed, check the kill's invariants, resume in a fresh process; return the
    final tracked state, after checking the resume started mid-epoch past the first step."""
    root = folder / "runs"
    spec_file = write_spec_file(folder / "spec.json", job.model_copy(
        update={"root": str(root), "local_dir": str(folder / "local")}))
    killed = run_cli("run", str(spec_file), cwd=folder, env=env)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = run_cli("resume", NAME, "--root", str(root), cwd=folder)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    found = RESUMED.search(output)
    assert found, f"not a mid-epoch resume:\n{output}"
    name, step, batch = found.group(1), int(found.group(2)), int(found.group(3))
    assert step > 0 and batch > 0, output
    committed = [folder / "local", root]
    assert any((base.rglob(f"{name}/{MANIFEST_NAME}")) for base in committed), name
    state = StateFile(root / NAME, Storage()).read()
    assert state is not None and state.sessions[-1].resumed_from == name
    assert state.sessions[-1].start_step == step
    return final_payload(root / NAME)


# -- gradient accumulation ------------------------------------------------------------------

ACCUMULATE = {"accumulate": 4}  # 15 batches an epoch: accumulations span each epoch's end


@pytest.fixture(scope="module")
def accumulation_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("accumulation-reference")
    return uninterrupted(folder, spec(folder, "accumulating", ACCUMULATE, every_steps=3))


@pytest.mark.parametrize("env", [
    # the 2nd local commit is the save held from epoch 0's end (3 batches pending there) to
    # the first step of epoch 1, at batch 1: the resume starts there, not at the epoch's end
    pytest.param({"COLABRUN_KILL_AT": "save.renamed@local:2"}, id="kill-after-a-held-save"),
    # as the 32nd batch is handed out: after epoch 2's first batch, its accumulation's 4th,
    # before run.step(); the newest save is step 6's; epoch 1's end save is still held
    pytest.param({"COLABRUN_KILL_AT": "batch:32"}, id="kill-mid-accumulation"),
])
def test_accumulating_across_batches_resumes_exactly(
    tmp_path: Path, accumulation_reference: dict[str, Any], env: dict[str, str]
) -> None:
    job = spec(tmp_path, "accumulating", ACCUMULATE, every_steps=3)
    assert_exactly_equal(killed_then_resumed(tmp_path, job, env), accumulation_reference)


# -- generators and loaders of the user's own -------------------------------------------------

DRAWS = {
    # each kind of generator run.track takes, and a DataLoader built with generator= (one
    # run for both: each broken alone fails it, and a run costs seconds)
    "generators-and-loader-generator": {"generators": True, "loader": "generator"},
    "stateful-loader": {"loader": "stateful"},
}


@pytest.mark.parametrize("kind", sorted(DRAWS))
def test_draws_from_the_users_own_state_resume_exactly(tmp_path: Path, kind: str) -> None:
    """12 batches an epoch, a save every 5 steps and at each epoch's end: killed after the
    4th local commit, step 17's (epoch 1, batch 5), and resumed from it: the top of epoch 1
    is drawn again, and its order."""
    job = spec(tmp_path / "killed", "draws", DRAWS[kind], every_steps=5)
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    reference = uninterrupted(tmp_path / "reference", job)
    resumed = killed_then_resumed(tmp_path / "killed", job,
                                  {"COLABRUN_KILL_AT": "save.renamed@local:4"})
    assert_exactly_equal(resumed, reference)
