"""Tier 1 for what crosses to the worker at its start (issue 18): the task keeps its code's
file names and a notebook cell's source; the worker's ``sys.path`` puts the working folder
last while colabrun imports. No process here: ``tests/runner/watch/test_import_failures.py``
runs real workers."""

from __future__ import annotations

import linecache
import pickle
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from colabrun.runner.watch.task_pickle import dumps_task
from colabrun.runner.watch.worker_path import startup_path, training_path

CELL = "<ipython-input-7-abc>"
SOURCE = '''\
def train(run):
    def inner():
        raise ValueError("boom from the cell")
    squares = [i * i for i in range(3)]
    inner()
'''


@pytest.fixture
def cell() -> Iterator[Any]:
    """A function defined as IPython defines a cell's: compiled under a made-up file name
    whose lines only :mod:`linecache` holds."""
    linecache.cache[CELL] = (len(SOURCE), None, SOURCE.splitlines(True), CELL)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(SOURCE, CELL, "exec"), namespace)
    yield namespace["train"]
    linecache.cache.pop(CELL, None)


def _traceback_of(train: Any) -> str:
    try:
        train(None)
    except ValueError as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("did not raise")


def test_a_cell_function_keeps_its_file_name_and_source_lines(cell: Any) -> None:
    blob = dumps_task({"train": cell})
    del linecache.cache[CELL]  # as in a fresh worker
    loaded = pickle.loads(blob)["train"]
    codes = [loaded.__code__, *(c for c in loaded.__code__.co_consts
                                if isinstance(c, types.CodeType))]
    assert [code.co_filename for code in codes] == [CELL] * 3  # nested ones too
    text = _traceback_of(loaded)
    assert f'File "{CELL}", line 3, in inner' in text
    assert 'raise ValueError("boom from the cell")' in text
    assert "<dynamic-code>" not in text


def test_the_lines_survive_linecache_checkcache(cell: Any) -> None:
    blob = dumps_task(cell)
    del linecache.cache[CELL]
    pickle.loads(blob)
    linecache.checkcache()  # what traceback formatting runs: it drops stat-able entries
    assert linecache.getline(CELL, 5) == "    inner()\n"


def test_a_script_function_keeps_its_path_and_ships_no_lines(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SOURCE)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(SOURCE, str(script), "exec"), namespace)
    blob = dumps_task(namespace["train"])
    assert b"squares = [i * i" not in blob  # the worker reads the file itself
    text = _traceback_of(pickle.loads(blob))
    assert f'File "{script}", line 3, in inner' in text
    assert 'raise ValueError("boom from the cell")' in text


def test_a_changed_cloudpickle_falls_back_to_plain_cloudpickle(cell: Any) -> None:
    def broken(code: types.CodeType) -> Any:
        raise AttributeError("co_something_new")

    loaded = pickle.loads(dumps_task(cell, code_reduce=broken))
    # plain cloudpickle: 3.1.3 and later rename the code "<dynamic-code>", older ones keep
    # its name; either way the task still runs
    assert loaded.__code__.co_filename in {"<dynamic-code>", CELL}
    assert "boom from the cell" in _traceback_of(loaded)
    assert pickle.loads(dumps_task(cell, code_reduce=None)).__code__.co_filename != CELL


# -- the worker's sys.path -------------------------------------------------------------------


def test_the_working_folder_goes_last_while_colabrun_imports(tmp_path: Path) -> None:
    work, site, home = str(tmp_path), "/site-packages", "/opt/colabrun-home"
    path = [work, "", "/usr/lib/python3.11", site, "."]
    assert startup_path(path, cwd=work, home=home) == [
        "/usr/lib/python3.11", site, work, "", "."]


def test_a_colabrun_checkout_in_the_working_folder_keeps_its_place(tmp_path: Path) -> None:
    work = str(tmp_path)
    assert startup_path([work, "/site-packages"], cwd=work, home=work) == [
        work, "/site-packages"]


def test_the_supervisors_order_comes_back_for_the_users_code() -> None:
    assert training_path(["", "/work", "/site"], ["/site", "/work", "/only-here"]) == [
        "", "/work", "/site", "/only-here"]
