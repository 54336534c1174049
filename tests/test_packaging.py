"""One import name, ``colabrun``: a user's ``runner.py``, ``state.py``, ``jobs.py`` or
``jobs/`` package beside their notebook never shadows colabrun, and a wheel puts
nothing in site-packages but ``colabrun`` and its dist-info (docs/contributing.md).

The commands run as a user runs them: the installed ``colabrun`` script, from a working
folder that holds those files, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from colabrun.jobs.entrypoint import current_entrypoint
from colabrun.jobs.spec import JobSpec, changed_defining_fields
from tests.helpers import REPO, digits_spec, write_spec_file
from tests.test_dependency_floors import clean_env, pip_install, run_in, working_tree_copy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: a user's module that colabrun must never import: importing it fails loudly
TRAP = 'raise ImportError("colabrun imported the user\'s {name} instead of its own")\n'


def user_folder(tmp_path: Path, *, package: bool) -> Path:
    """A working folder with the user's ``runner.py`` and ``state.py``, and either a
    ``jobs.py`` or a ``jobs/`` package, each of which fails when imported."""
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("runner.py", "state.py"):
        (folder / name).write_text(TRAP.format(name=name))
    if package:
        (folder / "jobs").mkdir()
        (folder / "jobs" / "__init__.py").write_text(TRAP.format(name="jobs/"))
    else:
        (folder / "jobs.py").write_text(TRAP.format(name="jobs.py"))
    return folder


def user_command(*args: str, cwd: Path, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """``colabrun ARGS`` through the installed script, as a user types it."""
    script = shutil.which("colabrun") or pytest.fail("the colabrun script is not on PATH")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**clean, "OMP_NUM_THREADS": "1", **(env or {})})


def test_an_entrypoint_of_colabrun_before_its_namespace_is_the_same_function() -> None:
    assert current_entrypoint("jobs.examples.digits:train") == (
        "colabrun.jobs.examples.digits:train")
    assert current_entrypoint("jobs.mine:train") == "jobs.mine:train"  # the user's own
    assert current_entrypoint("mypkg.train:train") == "mypkg.train:train"
    spec = JobSpec(name="d", entrypoint="jobs.examples.digits:train", epochs=1)
    assert spec.entrypoint == "colabrun.jobs.examples.digits:train"
    recorded = {**spec.defining_fields(), "entrypoint": "jobs.examples.digits:train"}
    assert changed_defining_fields(recorded, spec) == []
    renamed = {**recorded, "entrypoint": "jobs.examples.mnist:train"}
    assert changed_defining_fields(renamed, spec) == ["entrypoint"]


@pytest.mark.slow
def test_a_job_created_under_the_old_entrypoint_name_resumes(tmp_path: Path) -> None:
    """A job on Drive from before the namespace: its spec.json and state.json name
    ``jobs.examples.digits:train``. ``colabrun resume`` continues it, with one notice."""
    root = tmp_path / "runs"
    spec = digits_spec(root, epochs=2)
    spec_file = write_spec_file(tmp_path / "spec.json", spec)
    first = user_command("run", str(spec_file), cwd=tmp_path,
                         env={"COLABRUN_KILL_AT": "step:60"})
    assert first.returncode == -9, first.stdout + first.stderr
    shutil.rmtree(tmp_path / "local")  # a fresh runtime: only the root is left
    job = root / "digits"
    for name in ("spec.json", "state.json"):  # what colabrun 0.1 wrote there
        text = (job / name).read_text().replace("colabrun.jobs.examples", "jobs.examples")
        (job / name).write_text(text)
    state = json.loads((job / "state.json").read_text())
    assert state["defining"]["entrypoint"] == "jobs.examples.digits:train"
    done = user_command("resume", "digits", "--root", str(root), cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.count("now named 'colabrun.jobs.examples.digits:train'") == 1, out
    resumed = re.search(r"resuming from step-\S+ \(step (\d+), ", out)
    assert resumed is not None and 0 < int(resumed.group(1)) <= 60, out  # the root's newest
    assert "local copy" not in out  # from the root: this runtime's disk is new
    state = json.loads((job / "state.json").read_text())
    assert state["status"] == "completed" and state["progress"]["global_step"] == 90
    assert state["defining"]["entrypoint"] == "colabrun.jobs.examples.digits:train"


@pytest.mark.slow
@pytest.mark.parametrize("package", [False, True], ids=["jobs.py", "jobs-package"])
def test_user_files_named_like_colabrun_layers_shadow_nothing(
    tmp_path: Path, package: bool
) -> None:
    folder = user_folder(tmp_path, package=package)
    probe = subprocess.run([sys.executable, "-c", "import colabrun; print(colabrun.run)"],
                           cwd=folder, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.returncode == 0, probe.stderr
    root = folder / "colabrun-runs"
    spec = digits_spec(root, epochs=2, supervise=True)
    spec_file = write_spec_file(folder / "digits.json", spec)
    killed = user_command("run", str(spec_file), cwd=folder,
                          env={"COLABRUN_KILL_AT": "step:60,step:9999"})
    out = killed.stdout + killed.stderr
    assert "instead of its own" not in out and "not a package" not in out, out
    # the supervisor restarted the killed worker once; the second entry never fires
    assert killed.returncode == 0, out
    assert "resuming from step-" in out, out
    again = user_command("resume", "digits", "--root", str(root), cwd=folder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "job 'digits' completed: 2/2 epochs, step 90" in again.stdout, again.stdout


@pytest.mark.slow
def test_the_notebook_cell_runs_beside_user_files_named_like_colabrun_layers(
    tmp_path: Path,
) -> None:
    folder = user_folder(tmp_path, package=True)
    notebook = nbformat.read(REPO / "docs" / "colab_quickstart.ipynb", as_version=4)
    cell = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    (folder / "cell.py").write_text(cell)  # a fresh interpreter whose sys.path[0] is here
    done = subprocess.run([sys.executable, "cell.py"], cwd=folder, capture_output=True,
                          text=True, timeout=600,
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "quickstart: completed, epoch 5/5, step 80" in done.stdout


@pytest.mark.slow
def test_a_wheel_installs_only_the_colabrun_name(tmp_path: Path) -> None:
    """Built from the tracked files, installed into a fresh venv without pip."""
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            target.symlink_to(os.readlink(REPO / name))
        else:
            shutil.copy2(REPO / name, target)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("colabrun-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    assert sorted(p.name for p in site.iterdir()) == [
        "colabrun", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"]
    installed = {str(p.relative_to(site / "colabrun")) for p in (site / "colabrun").rglob("*")
                 if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts}
    expected = {f"{layer}/{p.relative_to(REPO / layer)}" for layer in ("runner", "jobs", "state")
                for p in (REPO / layer).rglob("*") if p.suffix in (".py", ".yaml")
                and "__pycache__" not in p.parts}
    assert expected <= installed and not any((site / "colabrun" / d).is_symlink()
                                             for d in ("runner", "jobs", "state"))


def build_wheel(tmp_path: Path) -> Path:
    """colabrun's wheel, built as docs/colab.md says (``pip wheel --no-deps``) from a copy of
    the working tree, with this Python's setuptools (no build isolation: no index needed)."""
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(out),
                            str(working_tree_copy(tmp_path / "src"))],
                           capture_output=True, text=True, timeout=600, env=clean_env())
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("colabrun-*.whl")
    return wheel


def site_packages(venv: Path) -> Path:
    (folder,) = (venv / "lib").glob("python3*/site-packages")
    return folder


def venv_without_colabrun(venv: Path) -> Path:
    """A fresh venv that sees this Python's packages (torch, ...) but not its colabrun, as a
    Colab runtime sees its preinstalled packages; returns its python.

    ``--system-site-packages`` would show it this machine's colabrun, an editable install
    whose ``.pth`` appends a finder for the source tree to ``sys.meta_path``: colabrun would
    import before any install, and what the wheel installs would be checked beside the source
    tree. Instead the venv's site-packages gets a ``.pth`` adding a site folder of links to
    every entry of this Python's site-packages but colabrun's (its other ``.pth`` files run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=300)
    view = venv / "machine-site-packages"
    view.mkdir()
    folders = [*site.getsitepackages(), *([site.getusersitepackages()]
                                          if site.ENABLE_USER_SITE else [])]
    for folder in (Path(f) for f in folders if Path(f).is_dir()):
        for entry in folder.iterdir():
            if "colabrun" not in entry.name.lower() and not os.path.lexists(view / entry.name):
                (view / entry.name).symlink_to(entry)
    (site_packages(venv) / "machine.pth").write_text(
        f"import site; site.addsitedir({str(view)!r})\n")
    python = venv / "bin" / "python"
    probe = run_in(python, "-c", "import importlib.util, torch; "
                   "print(importlib.util.find_spec('colabrun'))", cwd=venv)
    assert probe.stdout.strip() == "None", (
        f"the venv should see torch and no colabrun:\n{probe.stdout}{probe.stderr}")
    return python


def twine_check(wheel: Path, tmp_path: Path) -> str:
    """``twine check --strict WHEEL``'s output: with this Python's twine (a dev extra), or one
    installed into a venv of its own where this Python has none."""
    python = Path(sys.executable)
    if importlib.util.find_spec("twine") is None:
        dev = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "optional-dependencies"]["dev"]
        (twine,) = (r for r in dev if Requirement(r).name == "twine")
        python = tmp_path / "twine" / "bin" / "python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                        str(python.parents[1])], check=True, capture_output=True, timeout=300)
        pip_install(python, twine)
    checked = run_in(python, "-m", "twine", "check", "--strict", str(wheel), cwd=tmp_path)
    assert checked.returncode == 0 and "PASSED" in checked.stdout, (
        checked.stdout + checked.stderr)
    return checked.stdout


@pytest.mark.slow
def test_the_wheel_passes_twine_check_and_runs_the_example_from_a_fresh_venv(
        tmp_path: Path) -> None:
    """The install path of docs/colab.md ("Installing colabrun"): the wheel, built from the
    working tree, passes ``twine check``; a plain ``pip install`` of it (no ``--no-deps``, as the
    notebook's launch cell does) into a fresh venv that has torch and the rest installs colabrun
    and nothing else, and its ``colabrun`` script runs the example outside the source tree."""
    wheel = build_wheel(tmp_path)
    twine_check(wheel, tmp_path)
    venv = tmp_path / "venv"
    python = venv_without_colabrun(venv)
    before = {p.name for p in site_packages(venv).iterdir()}
    pip_install(python, str(wheel))
    name, version = wheel.name.split("-")[:2]
    added = sorted({p.name for p in site_packages(venv).iterdir()} - before)
    assert added == ["colabrun", f"{name}-{version}.dist-info"], (
        f"pip installed or upgraded more than colabrun: {added}")

    work = tmp_path / "work"  # outside the source tree
    work.mkdir()
    found = run_in(python, "-c", "import colabrun; print(colabrun.__file__)", cwd=work)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(site_packages(venv)), found.stdout
    example = (REPO / "jobs" / "examples" / "digits.yaml").read_text(encoding="utf-8")
    assert "\nepochs: 8\n" in example
    (work / "digits.yaml").write_text(example.replace("\nepochs: 8\n", "\nepochs: 1\n"))
    ran = run_in(venv / "bin" / "colabrun", "run", "digits.yaml", "--root",
                 str(tmp_path / "runs"), cwd=work, timeout=600)
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out
    assert "job 'digits-cnn' completed: 1/1 epochs, step 45" in out, out
