"""What a start checks before it writes anything (runner/preflight.py): pure verdicts over
what the disk says, and the look itself on a real temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabrun.jobs.errors import SpecError, StorageError
from colabrun.runner.preflight import MIN_FREE_BYTES, Look, check_folders, look, problem
from colabrun.state.storage import Storage
from tests.helpers import digits_spec


def _look(path: str = "/r/runs", existing: str = "/r", *, is_dir: bool = True,
          writable: bool = True, free: int | None = 10 << 30) -> Look:
    return Look(Path(path), Path(existing), is_dir, writable, free)


def test_a_writable_folder_with_room_has_no_problem() -> None:
    assert problem(_look()) is None
    assert problem(_look(free=None)) is None  # free space unknown: not refused


def test_a_file_in_the_path_is_named() -> None:
    found = problem(_look(is_dir=False))
    assert found == "/r is a broken link, not a folder (in its path /r/runs)"


def test_a_read_only_folder_is_named() -> None:
    assert problem(_look(writable=False)) == ("/r is not writable (a read-only disk, or its "
                                              "permissions)")


def test_too_little_room_for_the_job_s_checkpoint_is_named() -> None:
    assert problem(_look(free=5 << 20), needed_bytes=4 << 20) is None
    found = problem(_look(free=3 << 20), needed_bytes=4 << 20)
    assert found == "/r has 3.1 MB free, and a checkpoint needs 4.2 MB"
    assert problem(_look(free=MIN_FREE_BYTES - 1)) is not None


def test_look_finds_the_nearest_existing_folder_and_creates_nothing(tmp_path: Path) -> None:
    seen = look(tmp_path / "a" / "b")
    assert (seen.existing, seen.is_dir, seen.writable) == (tmp_path, True, True)
    assert seen.free_bytes is not None and seen.free_bytes > 0
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    seen = look(tmp_path / "f" / "b")
    assert (seen.existing, seen.is_dir) == (tmp_path / "f", False)
    assert problem(seen) == f"{tmp_path / 'f'} is a file, not a folder (in its path {seen.path})"


def test_check_folders_says_which_folder_and_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    spec = digits_spec(tmp_path / "runs", local_dir=str(tmp_path / "f" / "local"))
    with pytest.raises(SpecError, match="local_dir .* set local_dir to a writable folder"):
        check_folders(spec, tmp_path / "runs", Storage())
    with pytest.raises(StorageError, match="the root .* choose another root"):
        check_folders(spec, tmp_path / "f" / "runs", Storage())
    check_folders(digits_spec(tmp_path / "runs"), tmp_path / "runs", Storage())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing created
