"""Which host folders a simulated runtime shares: pure over paths, so no namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabrun.runner.sim.folders import (
    binds,
    holds_tmp,
    outermost,
    python_folders,
    requested_folders,
    visible_folders,
)


def test_only_the_outermost_folders_are_kept_once_and_sorted() -> None:
    paths = [Path("/tmp/a/b"), Path("/srv/x"), Path("/tmp/a"), Path("/srv/x"), Path("/tmp/ab")]
    assert outermost(paths) == [Path("/srv/x"), Path("/tmp/a"), Path("/tmp/ab")]


def test_tmp_and_the_folders_holding_it_are_never_shared_automatically() -> None:
    assert holds_tmp(Path("/tmp")) and holds_tmp(Path("/"))
    assert not holds_tmp(Path("/tmp/x")) and not holds_tmp(Path("/srv"))
    automatic = [Path("/"), Path("/tmp"), Path("/tmp/work"), Path("/tmp/work/logs")]
    assert visible_folders([Path("/srv/root")], automatic) == (Path("/srv/root"),
                                                               Path("/tmp/work"))


def test_only_folders_under_tmp_are_bound_back_in() -> None:
    assert binds([Path("/srv/root"), Path("/tmp/work"), Path("/tmp/a/b")]) == ["work", "a/b"]


def test_a_requested_folder_is_resolved_and_checked(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert requested_folders([Path("missing")]) == [(tmp_path / "missing").resolve()]
    for folder in (Path("/tmp"), Path("/")):
        with pytest.raises(ValueError, match="host's /tmp"):
            requested_folders([folder])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="only folders"):
        requested_folders([Path("file")])


def test_the_python_folders_all_lie_under_tmp() -> None:
    assert all(p.is_relative_to("/tmp") and p != Path("/tmp") for p in python_folders())
