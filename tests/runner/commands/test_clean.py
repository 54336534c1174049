"""``colabrun clean NAME``: a job deleted for good, asked first, never one a live runner
holds; every file truncated before it is deleted (Drive's Trash keeps deleted bytes)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabrun.jobs.spec import JobSpec
from colabrun.runner.commands.clean import clean, plan_clean
from colabrun.runner.commands.cli import main
from colabrun.runner.faults import FaultyFs
from colabrun.runner.platform import runtime_id
from colabrun.state.jobdir import JobDir
from colabrun.state.model import Lease, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import copy_job, finished_digits_job, tree_snapshot

NAME = "digits"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, JobSpec]]:
    root = tmp_path_factory.mktemp("clean") / "runs"
    yield root, finished_digits_job(root)


def test_clean_yes_deletes_the_job_and_its_staging_folder(
        finished: tuple[Path, JobSpec], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = copy_job(finished, tmp_path)
    (root / "other").mkdir()  # another job's folder is left alone
    local = JobDir(root, NAME).local.dir.parent
    local.mkdir(parents=True, exist_ok=True)
    (local / "leftover").write_text("x")
    assert main(["clean", NAME, "--root", str(root), "--yes"]) == 0
    assert f"deleted job {NAME!r}" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["other"]
    assert not local.exists()
    assert main(["status", NAME, "--root", str(root)]) == 2  # gone


def test_clean_without_a_terminal_asks_for_yes_and_deletes_nothing(
        finished: tuple[Path, JobSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = copy_job(finished, tmp_path)
    before = tree_snapshot(root)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal
    assert main(["clean", NAME, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"delete job {NAME!r} under {root}" in err and "pass --yes" in err
    assert tree_snapshot(root) == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "deleted"), [("n\n", False), ("yes\n", True)])
def test_clean_asks_at_a_terminal(finished: tuple[Path, JobSpec], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, answer: str,
                                  deleted: bool) -> None:
    root, _ = copy_job(finished, tmp_path)
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    assert main(["clean", NAME, "--root", str(root)]) == 0
    assert (root / NAME).exists() is not deleted


def test_a_job_a_live_runner_holds_is_not_cleaned(
        finished: tuple[Path, JobSpec], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = copy_job(finished, tmp_path)
    statefile = StateFile(root / NAME, Storage())
    state = statefile.read()
    assert state is not None
    held = Lease(owner=runtime_id(), host="vm", pid=os.getppid(), generation=state.generation,
                 acquired_at=state.updated_at, heartbeat_at=9e12, duration_s=600, token="t")
    statefile.write(state.model_copy(update={"status": Status.RUNNING, "lease": held}))
    before = tree_snapshot(root)
    assert main(["clean", NAME, "--root", str(root), "--yes"]) == 4
    assert "stop it first (`colabrun stop digits`)" in capsys.readouterr().err
    assert tree_snapshot(root) == before


def test_every_file_is_truncated_before_it_is_deleted(
        finished: tuple[Path, JobSpec], tmp_path: Path) -> None:
    root, _ = copy_job(finished, tmp_path)

    fs = FaultyFs()  # no faults: it records every call
    job = JobDir(root, NAME, storage=Storage(fs=fs))
    clean(plan_clean(job), say=lambda _: None)
    assert not job.path.exists()
    unlinked = [p for op, p in fs.calls if op == "unlink"]
    assert unlinked and all(("truncate", p) in fs.calls for p in unlinked)
    assert unlinked[:2] == [str(job.path / "state.json"), str(job.path / "spec.json")]
