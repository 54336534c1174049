"""docs/colab_quickstart.ipynb: valid, and its cells run outside Colab as they stand.

The Drive step is skipped by the notebook's own detection, not by editing it;
the install step by colabrun being importable. Re-running the launch cell
continues the job, and once done, trains nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.helpers import REPO

NOTEBOOK = REPO / "docs" / "colab_quickstart.ipynb"


def test_the_notebook_is_valid() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code) == 1, "one launch cell"
    assert "drive.mount" in code[0].source and "colabrun.run(spec)" in code[0].source


@pytest.mark.slow
def test_running_the_launch_cell_twice_trains_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the default root ./colabrun-runs lands here
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "COLAB_RELEASE_TAG" not in os.environ
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c.source for c in notebook.cells if c.cell_type == "code"]
    for _ in range(2):  # a reconnect: the same cell again, in the same kernel
        namespace: dict[str, object] = {"__name__": "__main__"}
        for source in cells:
            exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.count("fresh start") == 1, "trained once"
    assert out.count("quickstart: completed, epoch 5/5, step 80") == 2
    assert (tmp_path / "colabrun-runs" / "quickstart" / "state.json").exists()
