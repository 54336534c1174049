"""docs/colab_quickstart.ipynb: valid, and its cells run outside Colab as they stand.

The Drive step is skipped by the notebook's own detection, not by editing it;
the install step by colabrun being importable, except on the simulated fresh
runtime, whose kernel has no colabrun and installs it from the wheel in the Drive
stand-in (docs/colab.md, "Installing colabrun"). Re-running the launch cell
continues the job, and once done, trains nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest

from colabrun.runner.sim import Runtime, refusal
from colabrun.state.checkpoints import CheckpointStore, parse_checkpoint_name
from colabrun.state.storage import Storage
from tests.helpers import REPO, assert_exactly_equal, final_payload
from tests.test_packaging import build_wheel, site_packages, venv_without_colabrun

NOTEBOOK = REPO / "docs" / "colab_quickstart.ipynb"


def test_the_notebook_is_valid() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code) == 1, "one launch cell"
    assert "drive.mount" in code[0].source and "colabrun.run(spec)" in code[0].source


def test_the_launch_cell_without_a_wheel_says_in_one_line_how_to_get_one(
        tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = (c.source for c in notebook.cells if c.cell_type == "code")
    head = cell[:cell.index("\nimport torch\n")]  # up to the install; colabrun is importable
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(head, str(NOTEBOOK), "exec"), namespace)
    assert namespace["WHEELS"] == "colabrun-runs/wheels"  # off Colab: under the default root
    install = namespace["install_colabrun"]
    assert callable(install)
    with pytest.raises(SystemExit) as raised:
        install(str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and f"no colabrun-*.whl in {tmp_path}" in message
    assert "python -m pip wheel --no-deps . -w dist/" in message
    assert "copy dist/colabrun-*.whl to" in message and "Installing colabrun" in message


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


@pytest.mark.slow
@pytest.mark.skipif(refusal() is not None, reason=str(refusal()))
def test_the_launch_cell_run_again_on_a_fresh_runtime_continues_from_drive(
        tmp_path: Path) -> None:
    """The Colab scenario, run by nbclient with the kernel inside a simulated runtime: the
    first runtime dies mid-training with its disk; the same notebook, run on a fresh one
    whose Python lacks colabrun, installs it from the wheel under the root (the Drive
    stand-in, shared by both), waits out the dead runtime's lease, resumes from the newest
    checkpoint there, ends bitwise equal to an uninterrupted run, and shows no traceback."""
    work = tmp_path / "work"  # the kernel's folder: the default root ./colabrun-runs is here
    kills = tmp_path / "kills.log"
    # the worker dies right after its first upload is recorded (its session's start is the
    # 1st state write), so a checkpoint is under the root however loaded the machine is
    with _notebook_runtime(tmp_path, work, "first", COLABRUN_KILL_AT="state.replaced:2",
                           COLABRUN_KILL_LOG=str(kills)) as first:
        deadline = time.monotonic() + 180
        while not (kills.exists() and kills.read_text()):  # the worker died
            assert first.alive() and time.monotonic() < deadline, first.output()
            time.sleep(0.01)
        first.kill()  # the runtime dies with it, its local disk too
    job = work / "colabrun-runs" / "quickstart"
    newest = max(CheckpointStore(job, Storage()).list_names(),
                 key=lambda n: parse_checkpoint_name(n) or (0, 0, 0))
    assert (parse_checkpoint_name(newest) or (80, 0, 0))[0] < 80, "it died before the end"
    # The fresh runtime's Python has torch and the rest but no colabrun: the cell installs
    # colabrun from the wheel copied to the Drive stand-in (built here while the dead
    # runtime's lease runs out, which the second runtime waits for anyway).
    (work / "colabrun-runs" / "wheels").mkdir()
    shutil.copy(build_wheel(tmp_path / "build"), work / "colabrun-runs" / "wheels")
    python = venv_without_colabrun(tmp_path / "venv")
    with _notebook_runtime(tmp_path, work, "second", python=python) as second:
        assert second.wait(timeout=300) == 0, second.output()
        shown = second.output()
    assert (site_packages(tmp_path / "venv") / "colabrun").is_dir(), "the cell installed it"
    assert f"resuming from {newest}" in shown, shown
    assert "took job 'quickstart' over" in shown and "fresh start" not in shown
    assert "quickstart: completed, epoch 5/5, step 80" in shown
    executed = nbformat.read(tmp_path / "second.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert all(o.output_type != "error" for o in outputs)
    assert "Traceback" not in shown, shown

    reference = tmp_path / "reference"  # the same cell, never interrupted
    with _notebook_runtime(tmp_path, reference, "reference") as ref:
        assert ref.wait(timeout=300) == 0, ref.output()
    assert_exactly_equal(final_payload(job),
                         final_payload(reference / "colabrun-runs" / "quickstart"))


def _notebook_runtime(tmp_path: Path, work: Path, name: str, *, python: Path | None = None,
                      **env: str) -> Runtime:
    """The notebook run by nbclient in a simulated runtime, its kernel's folder ``work``; the
    kernel is this Python (colabrun importable), or ``python`` with the source tree kept off
    its path (the runner, started in the repository, still finds ``tests``)."""
    work.mkdir(parents=True, exist_ok=True)
    argv = [str(python or sys.executable), "-m", "tests.notebook_runner", str(NOTEBOOK),
            str(tmp_path / f"{name}.ipynb"), str(work)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    if python is not None:
        environment.pop("PYTHONPATH")
    environment.pop("TMPDIR", None)  # staging on the runtime's own disk
    return Runtime(argv, shared=[tmp_path], cwd=REPO, log=tmp_path / f"{name}.log",
                   env=environment)


BARS_CELL = """\
import time
import colabrun

def train(run):
    for _ in run.epochs():
        for _ in run.batches(range(40)):
            time.sleep(0.02)  # 0.8 s an epoch: the once-a-second heartbeat draws the bars
            run.step(loss=0.5)

spec = colabrun.JobSpec(name="bars", entrypoint=train, epochs=3, root="runs",
                        local_dir="local", checkpoint={"every_s": None})
print(colabrun.run(spec).status.value)
"""


@pytest.mark.slow
def test_notebook_progress_bars_end_cleared_never_red(tmp_path: Path) -> None:
    """The epoch bars, as a notebook's widgets keep them after the cell: each was closed full
    (so cleared), none red (closed short), none for an epoch past the last."""
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(BARS_CELL))
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = notebook.cells[0].outputs
    printed = "".join(o.get("text", "") for o in outputs)
    assert "completed" in printed, printed
    shown = [o["data"]["text/plain"] for o in outputs if o["output_type"] == "display_data"]
    assert any(s.startswith("epoch ") for s in shown), outputs  # bars were drawn
    # the widgets still open when the cell ended (those closed are gone)
    widgets = notebook.metadata.get("widgets", {})
    models = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    bars = [m["state"] for m in models.values() if m["model_name"] == "FloatProgressModel"]
    assert [b for b in bars if b.get("bar_style") == "danger"] == []
    for box in (m["state"] for m in models.values() if m["model_name"] == "HBoxModel"):
        layout = models[box["layout"].removeprefix("IPY_MODEL_")]["state"]
        assert layout.get("visibility") == "hidden", "a bar left on screen"
    texts = [m["state"].get("value", "") for m in models.values()
             if m["model_name"] == "HTMLModel"]
    assert not any("epoch\u20074/3" in t for t in texts)


LOAD_CELL = """\
import torch
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.storage import Storage

job = colabrun.status("quickstart")
tracked = colabrun.load("quickstart")
store = CheckpointStore(Path("colabrun-runs/quickstart").absolute(), Storage())
saved = store.load_payload(job.latest_checkpoint.name)["tracked"]
same = all(torch.equal(tracked[o][k], v) for o in saved for k, v in saved[o].items()
           if isinstance(v, torch.Tensor))
print("load equals the last checkpoint:", same, sorted(tracked))
"""


@pytest.mark.slow
def test_the_notebook_run_twice_by_nbclient_trains_once_and_loads_its_model(
        tmp_path: Path) -> None:
    """The acceptance run: the quickstart notebook's launch cell twice in one kernel (a
    reconnect), then colabrun.load; no traceback, no red bar, the second run trains nothing,
    and the loaded tensors are the last checkpoint's."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    launch = next(c for c in notebook.cells if c.cell_type == "code")
    notebook.cells.append(nbformat.v4.new_code_cell(launch.source))  # run it again
    notebook.cells.append(nbformat.v4.new_code_cell("from pathlib import Path\n" + LOAD_CELL))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert [o for o in outputs if o["output_type"] == "error"] == []

    def text(cell: nbformat.NotebookNode) -> str:
        return "".join(o.get("text", "") for o in cell.outputs)

    first, second, loaded = text(code[0]), text(code[1]), text(code[2])
    assert "fresh start" in first and "quickstart: completed, epoch 5/5, step 80" in first
    assert "fresh start" not in second and "resuming" not in second  # trained nothing
    assert "quickstart: completed, epoch 5/5, step 80" in second
    assert "load equals the last checkpoint: True ['model', 'optimizer']" in loaded
    widgets = notebook.metadata.get("widgets", {})
    models = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert not [m for m in models.values() if m["model_name"] == "FloatProgressModel"
                and m["state"].get("bar_style") == "danger"]
