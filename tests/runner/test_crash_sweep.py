"""The crash-point sweep: a real SIGKILL at every named point of the loop and the
save protocol, then a resume in a fresh process.

After each kill: the state file parses, it names only committed checkpoints,
the resume picks the newest checkpoint that verifies (so at most the one save
in flight is lost, and nothing uncommitted is loaded), and the final weights
equal an uninterrupted run's. A point added to the protocol is swept
automatically; one fired without being declared fails the first test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.errors import CheckpointError
from colabrun.runner.faults import ALL_POINTS, CountPoints
from colabrun.state.checkpoints import parse_checkpoint_name
from colabrun.state.jobdir import JobDir
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, digits_spec, final_payload, run_cli, write_spec_file

pytestmark = pytest.mark.slow

NAME = "digits"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, int]]:
    """The uninterrupted run's final state, and how often each point passed."""
    root = tmp_path_factory.mktemp("reference")
    counter = CountPoints()
    runner.run(digits_spec(root, name=NAME), on_point=counter)
    return final_payload(root / NAME), counter.counts


def test_every_point_that_fires_is_declared_and_swept(
    reference: tuple[dict[str, Any], dict[str, int]]
) -> None:
    _, counts = reference
    assert set(counts) == set(ALL_POINTS), "declare new points in SAVE_POINTS & co."


def _newest_verifying(root: Path) -> str | None:
    """The newest checkpoint that verifies, under the root or in this runtime's local
    staging (a save committed locally but not uploaded yet counts: it survives)."""
    job = JobDir(root, NAME, local_root=root.parent / "local")
    found: list[tuple[tuple[int, int, int], str]] = []
    for store in (job.store, job.local):
        for name in store.list_names():
            try:
                store.verify(name)
            except CheckpointError:
                continue
            key = parse_checkpoint_name(name)
            assert key is not None
            found.append((key, name))
    return max(found)[1] if found else None


@pytest.mark.parametrize("point", ALL_POINTS)
def test_kill_at_point_then_resume(
    tmp_path: Path, reference: tuple[dict[str, Any], dict[str, int]], point: str
) -> None:
    final, counts = reference
    nth = max(1, (counts[point] + 1) // 2)  # mid-run: after some checkpoints exist
    if point.startswith("state."):
        # the state is written twice as the session starts, then once per upload, whose
        # number follows the upload pace: on a loaded machine only the first upload may
        # come before the end, so the reference's count is no guide. The 3rd write is the
        # first upload's: mid-run, with a checkpoint under the root
        nth = min(nth, 3)
    root = tmp_path / "runs"
    spec_file = write_spec_file(tmp_path / "spec.json", digits_spec(root, name=NAME))
    killed = run_cli("run", str(spec_file), cwd=tmp_path,
                     env={"COLABRUN_KILL_AT": f"{point}:{nth}"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    job_dir = root / NAME
    state = StateFile(job_dir, Storage()).read()
    assert state is not None, "the state file parses after the kill"
    for record in state.checkpoints:
        assert (job_dir / "checkpoints" / record.name / "manifest.json").exists()
    newest = _newest_verifying(root)
    resumed = run_cli("resume", NAME, "--root", str(root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    if state.status is Status.COMPLETED:
        # a loaded machine coalesces uploads, so a run may write state fewer times than
        # the reference: the mid-run count can be the last write, which records the end
        assert "completed" in resumed.stdout and "resuming from" not in resumed.stdout
    elif newest is None:
        assert "no checkpoint yet, fresh start" in resumed.stdout
    else:
        assert f"resuming from {newest} " in resumed.stdout, "the newest committed one"
    assert_exactly_equal(final_payload(job_dir), final)
