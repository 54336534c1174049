"""Tier 3: real SIGKILLs of real processes, resumed in a fresh one, compared bit for bit.

The reference is an uninterrupted run of the same spec in its own process.
Each kill test kills ``colabrun run`` at a named point (COLABRUN_KILL_AT),
checks the invariants (state parses, nothing uncommitted is named), resumes
with ``colabrun resume`` and compares every tracked tensor with ``torch.equal``.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from colabrun.state.manifest import MANIFEST_NAME, PAYLOAD_NAME
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, digits_spec, final_payload, run_cli, write_spec_file

pytestmark = pytest.mark.slow

NAME = "digits"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The final tracked state of an uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    spec_file = write_spec_file(root / "spec.json", digits_spec(root / "runs", name=NAME))
    done = run_cli("run", str(spec_file), cwd=root)
    assert done.returncode == 0, done.stderr + done.stdout
    return final_payload(root / "runs" / NAME)


def _killed_run(tmp_path: Path, point: str) -> tuple[Path, Path]:
    """Run the job until COLABRUN_KILL_AT=point kills it; return (root, job_dir)."""
    root = tmp_path / "runs"
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec_file = write_spec_file(tmp_path / "spec.json", digits_spec(root, name=NAME))
    killed = run_cli("run", str(spec_file), cwd=tmp_path, env={"COLABRUN_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    return root, root / NAME


def _assert_invariants(job_dir: Path) -> None:
    """After a kill: the state parses and names only committed checkpoints."""
    state = StateFile(job_dir, Storage()).read()
    assert state is not None
    for record in state.checkpoints:
        assert (job_dir / "checkpoints" / record.name / MANIFEST_NAME).exists(), record.name


def _resume(tmp_path: Path, root: Path) -> str:
    resumed = run_cli("resume", NAME, "--root", str(root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    return resumed.stdout + resumed.stderr


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("step:57", id="mid-epoch"),
        pytest.param("epoch.end:2", id="epoch-boundary"),
        pytest.param("save.payload_written:3", id="mid-checkpoint-before-manifest"),
        # state writes: the session's start (job, lease, session), where it resumed
        # from, then one per checkpoint uploaded: the 5th is the third record
        pytest.param("state.tmp_written:5", id="mid-state-write"),
        pytest.param("save.renamed:5", id="after-commit-before-state"),
        pytest.param("rotate.manifest_removed:1", id="mid-rotation"),
    ],
)
def test_kill_then_resume_is_bit_exact(
    tmp_path: Path, reference: dict[str, Any], point: str
) -> None:
    root, job_dir = _killed_run(tmp_path, point)
    _assert_invariants(job_dir)
    output = _resume(tmp_path, root)
    assert "resuming from step-" in output
    assert_exactly_equal(final_payload(job_dir), reference)


def test_kill_before_any_checkpoint_starts_fresh(tmp_path: Path, reference: dict[str, Any]
                                                 ) -> None:
    root, job_dir = _killed_run(tmp_path, "step:3")
    output = _resume(tmp_path, root)
    assert "no checkpoint yet, fresh start" in output
    assert_exactly_equal(final_payload(job_dir), reference)


def _newest_checkpoint(job_dir: Path) -> Path:
    """The newest checkpoint ``state.json`` records; a newer folder the kill left unrecorded
    (between an upload's rename and its record) is removed, so that the damaged one is
    the one a resume would choose."""
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.checkpoints, "the kill comes after a recorded save"
    newest = max(record.name for record in state.checkpoints)
    for folder in (job_dir / "checkpoints").glob("step-*"):
        if folder.name > newest:
            shutil.rmtree(folder)
    return job_dir / "checkpoints" / newest


def _truncate_half(folder: Path) -> None:
    payload = folder / PAYLOAD_NAME
    payload.write_bytes(payload.read_bytes()[: payload.stat().st_size // 2])


def _truncate_zero(folder: Path) -> None:
    (folder / PAYLOAD_NAME).write_bytes(b"")


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder)


@pytest.mark.parametrize("damage", [_truncate_half, _truncate_zero, _remove_folder],
                         ids=["truncated-half", "zero-bytes", "folder-missing"])
def test_damaged_newest_checkpoint_falls_back(
    tmp_path: Path, reference: dict[str, Any], damage: Any
) -> None:
    root, job_dir = _killed_run(tmp_path, "step:75")
    newest = _newest_checkpoint(job_dir)
    damage(newest)
    shutil.rmtree(tmp_path / "local")  # the damage is seen by a fresh runtime
    output = _resume(tmp_path, root)
    assert f"skipping checkpoint {newest.name}" in output
    assert "falling back to an older checkpoint" in output
    assert_exactly_equal(final_payload(job_dir), reference)


def test_resume_on_a_fresh_runtime_from_the_root_alone(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    """F4: a new VM sees only the Drive folder: no spec file, no cwd, no local state."""
    root, job_dir = _killed_run(tmp_path / "old-vm", "step:100")
    drive_copy = tmp_path / "drive" / "colabrun"
    shutil.copytree(root, drive_copy)
    shutil.rmtree(tmp_path / "old-vm")
    elsewhere = tmp_path / "new-vm"
    elsewhere.mkdir()
    resumed = run_cli("resume", NAME, "--root", str(drive_copy), cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "resuming from step-" in resumed.stdout
    assert_exactly_equal(final_payload(drive_copy / NAME), reference)
