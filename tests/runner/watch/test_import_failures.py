"""Tier 3 for issue 18, from the user's side: code that does not import, a ``def train():``,
and a traceback from a notebook cell, each run through ``colabrun.run`` (a real supervisor
here, a real worker process) or the ``colabrun`` command.

An import that fails in the worker is no crash: the job fails at once (one worker, no
restart), the cause on the console and in ``log/colabrun.log``. A file of the working
folder named like a package colabrun imports (``numpy.py``, ``yaml.py``) no longer kills
the worker. A traceback names the notebook cell, with its source line.
"""

from __future__ import annotations

import linecache
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.errors import EntrypointError, TrainingError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.display.console import LOG_DIR, LOG_NAME
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import run_cli, tree_snapshot

pytestmark = pytest.mark.slow

MODULES = ("train_18", "helper_18", "fakepkg_18")
CELL = "<ipython-input-7-abc>"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The working folder (the cwd, so the search path): runs write under ``tmp_path``;
    ``sys.path``, the modules imported and linecache are put back afterwards."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(folder)
    yield folder
    for name in MODULES:
        sys.modules.pop(name, None)
    linecache.cache.pop(CELL, None)


def _spec(work: Path, entrypoint: Any, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({
        "name": "imports", "entrypoint": entrypoint, "epochs": 1, "supervise": True,
        "root": str(work.parent / "runs"), "local_dir": str(work.parent / "local"),
        "params": {"sleep_s": 0.0}, **fields})


def _job(work: Path) -> Path:
    return work.parent / "runs" / "imports"


def _log(work: Path) -> str:
    return (_job(work) / LOG_DIR / LOG_NAME).read_text()


def _status(work: Path) -> tuple[Status, str | None]:
    state = StateFile(_job(work), Storage()).read()
    assert state is not None
    return state.status, state.reason


def _defined_in(filename: str, source: str, **globals_: Any) -> Any:
    """``train`` as a notebook cell or a script defines it: by value, under ``filename``."""
    namespace: dict[str, Any] = {"__name__": "__main__", **globals_}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["train"]


def _one_attempt(output: str, log: str) -> None:
    """One worker ran: no restart was announced, and the log holds one traceback."""
    assert "restarting it" not in output, output
    assert log.count("Traceback (most recent call last)") == 1, log


# -- A: imports ---------------------------------------------------------------------------------


def test_a_module_the_worker_cannot_import_fails_at_once_with_its_cause(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The notebook imported a helper from a folder, then changed folder (``%cd``): the
    worker cannot import the helper. Before: 4 workers, 7 s of backoff, "exited with code 1"."""
    proj = work / "proj"
    proj.mkdir()
    (proj / "helper_18.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(proj))
    helper = __import__("helper_18")
    sys.path.remove(str(proj))
    train = _defined_in("<ipython-input-3-def>", "def train(run):\n    return helper.VALUE\n",
                        helper=helper)
    with pytest.raises(EntrypointError) as info:
        runner.run(_spec(work, train), progress=False)
    message = str(info.value)
    assert message.startswith("job 'imports': the worker cannot load the training function "
                              "(ModuleNotFoundError: No module named 'helper_18'); this process "
                              f"imported 'helper_18' from {proj / 'helper_18.py'}, but the "
                              f"worker (in {work}) does not find it")
    assert f"`sys.path.insert(0, {str(proj)!r})`" in message
    assert info.value.exit_code == 2
    output = capsys.readouterr().out
    for seen in (output, _log(work)):
        assert "ModuleNotFoundError: No module named 'helper_18'" in seen
    _one_attempt(output, _log(work))
    status, reason = _status(work)
    assert status is Status.FAILED and reason is not None and "helper_18" in reason


def test_files_named_like_packages_colabrun_imports_do_not_kill_the_worker(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``numpy.py`` and a ``yaml.py`` beside the spec: the worker imported them in place of
    numpy (torch then died importing) and PyYAML. Now it imports as the supervisor did."""
    (work / "numpy.py").write_text("# my notes on numpy\n")
    (work / "yaml.py").write_text("# my notes on yaml\n")
    (work / "train_18.py").write_text(
        "import numpy\nimport yaml\nfrom tests.jobs_for_tests import slow_train\n\n"
        "def train(run):\n"
        "    assert hasattr(numpy, 'ndarray') and hasattr(yaml, 'safe_load'), 'a shadow'\n"
        "    return slow_train(run)\n")
    result = runner.run(_spec(work, "train_18:train"), progress=False)
    assert result.status is Status.COMPLETED, capsys.readouterr().out
    assert "restarting it" not in capsys.readouterr().out


def _refused_run(folder: Path, train_py: str) -> subprocess.CompletedProcess[str]:
    """``colabrun run`` of a one-epoch spec whose ``train.py`` is ``train_py``: it must exit 2
    with nothing written (no file changed, no root, no staging folder)."""
    (folder / "train.py").write_text(train_py)
    (folder / "spec.yaml").write_text(
        "name: refused\nentrypoint: train:train\nepochs: 1\nroot: ./runs\nlocal_dir: ./local\n")
    before = tree_snapshot(folder)
    done = run_cli("run", "spec.yaml", cwd=folder)
    assert done.returncode == 2, done.stdout + done.stderr
    assert tree_snapshot(folder) == before
    assert not (folder / "runs").exists() and not (folder / "local").exists()
    return done


def test_a_missing_dependency_of_the_entrypoint_fails_before_anything_is_written(
        tmp_path: Path) -> None:
    done = _refused_run(tmp_path, "import nonexistent_pkg_18\n\ndef train(run): ...\n")
    assert done.stderr.splitlines() == [
        "colabrun: error: entrypoint 'train:train': module 'train' does not import "
        "(ModuleNotFoundError: No module named 'nonexistent_pkg_18'); no module "
        f"'nonexistent_pkg_18' in this Python ({sys.executable}): install it (`pip install "
        "nonexistent_pkg_18`, or `%pip install nonexistent_pkg_18` in a notebook; its package "
        "may have another name), or fix the import"]


@pytest.mark.parametrize("supervise", [True, False])
def test_an_import_in_the_training_function_fails_at_once_saying_what_to_do(
        work: Path, capsys: pytest.CaptureFixture[str], supervise: bool) -> None:
    """An ``import`` the function runs itself: a bug of the code or the environment, not a
    fault (a new worker fails the same way), reported alike in the worker and in-process."""
    (work / "train_18.py").write_text("def train(run):\n    import nonexistent_pkg_18\n")
    with pytest.raises(TrainingError) as info:
        runner.run(_spec(work, "train_18:train", supervise=supervise), progress=False)
    assert ("the training function raised ModuleNotFoundError: No module named "
            f"'nonexistent_pkg_18'; no module 'nonexistent_pkg_18' in this Python "
            f"({sys.executable}): install it (`pip install nonexistent_pkg_18`") in str(info.value)
    assert info.value.exit_code == 1
    output = capsys.readouterr().out
    for seen in (output, _log(work)):
        assert f'File "{work / "train_18.py"}", line 2, in train' in seen
        assert "    import nonexistent_pkg_18" in seen
    _one_attempt(output, _log(work))
    assert _status(work)[0] is Status.FAILED


def test_a_file_that_shadows_a_package_the_training_imports_is_named(work: Path) -> None:
    """``fakepkg_18`` is installed (a folder behind the working folder on sys.path), and a
    ``fakepkg_18.py`` of notes lies in the working folder: the worker imports the notes."""
    site = work.parent / "site"
    (site / "fakepkg_18").mkdir(parents=True)
    (site / "fakepkg_18" / "__init__.py").write_text("def thing():\n    return 1\n")
    sys.path.append(str(site))
    (work / "fakepkg_18.py").write_text("# my notes on fakepkg\n")
    (work / "train_18.py").write_text(
        "def train(run):\n    from fakepkg_18 import thing\n    return thing()\n")
    with pytest.raises(TrainingError) as info:
        runner.run(_spec(work, "train_18:train"), progress=False)
    installed = (site / "fakepkg_18" / "__init__.py").resolve()
    assert (f"raised ImportError: cannot import name 'thing' from 'fakepkg_18' "
            f"({work / 'fakepkg_18.py'}); ./fakepkg_18.py shadows the installed package "
            f"'fakepkg_18' ({installed}); rename it") in str(info.value)
    assert _status(work)[0] is Status.FAILED


def test_a_worker_that_cannot_import_colabrun_says_why_once(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken package on the path (not the working folder's: that one goes last)."""
    broken = work.parent / "broken"
    broken.mkdir()
    (broken / "cloudpickle.py").write_text("raise ImportError('a broken cloudpickle')\n")
    sys.path.insert(0, str(broken))  # this process has cloudpickle loaded already
    with pytest.raises(EntrypointError) as info:
        runner.run(_spec(work, "tests.jobs_for_tests:slow_train"), progress=False)
    assert str(info.value) == (
        "job 'imports': the worker process cannot import colabrun (ImportError: a broken "
        "cloudpickle); its traceback is above, and in log/colabrun.log")
    output = capsys.readouterr().out
    for seen in (output, _log(work)):
        assert f'File "{broken / "cloudpickle.py"}", line 1' in seen
    _one_attempt(output, _log(work))
    assert _status(work)[0] is Status.FAILED


# -- B: tracebacks --------------------------------------------------------------------------


def test_a_traceback_from_a_notebook_cell_names_the_cell_and_its_line(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = "def train(run):\n    x = 1\n    raise ValueError('boom from the cell')\n"
    linecache.cache[CELL] = (len(source), None, source.splitlines(True), CELL)  # as IPython
    with pytest.raises(TrainingError, match="raised ValueError: boom from the cell"):
        runner.run(_spec(work, _defined_in(CELL, source)), progress=False)
    output = capsys.readouterr().out
    for seen in (output, _log(work)):
        assert f'File "{CELL}", line 3, in train' in seen
        assert "    raise ValueError('boom from the cell')" in seen
        assert "<dynamic-code>" not in seen


def test_a_traceback_from_a_script_keeps_its_path(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = work / "script.py"
    source = "def train(run):\n    raise ValueError('boom from the script')\n"
    script.write_text(source)
    with pytest.raises(TrainingError, match="raised ValueError: boom from the script"):
        runner.run(_spec(work, _defined_in(str(script), source)), progress=False)
    for seen in (capsys.readouterr().out, _log(work)):
        assert f'File "{script}", line 2, in train' in seen
        assert "    raise ValueError('boom from the script')" in seen


# -- C: the signature -----------------------------------------------------------------------


def test_an_entrypoint_without_an_argument_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    done = _refused_run(tmp_path, "def train():\n    pass\n")
    assert done.stderr.splitlines() == [
        "colabrun: error: entrypoint 'train:train' is `train()`, which cannot be called with "
        "the run handle as its one argument (too many positional arguments); define it as "
        "`def train(run):` (any other parameter needs a default)"]
    assert done.stdout == ""
