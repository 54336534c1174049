"""README examples run as tests, and the README's test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the default root, ./colabrun-runs, lands here
    blocks = code_blocks("python")
    assert blocks, "the README shows a Python example"
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(block, "README.md", "exec"), namespace)
        assert (tmp_path / "colabrun-runs" / "toy" / "state.json").exists()
        exec(compile(block, "README.md", "exec"), namespace)  # the re-run cell
    out = capsys.readouterr().out
    assert "completed 24" in out  # the printed status and step, twice
    assert out.count("fresh start") == 1, "re-running the cell must not train again"


def test_ci_runs_the_readme_test_command() -> None:
    commands = [line for block in code_blocks("bash") for line in block.splitlines()
                if "pytest" in line and not line.startswith("#")]
    assert len(commands) == 1
    install, test = (part.strip() for part in commands[0].split("&&"))
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert install in ci and test in ci


def test_example_command_names_a_real_spec() -> None:
    assert "colabrun run jobs/examples/digits.yaml" in README
    assert (REPO / "jobs" / "examples" / "digits.yaml").is_file()


@pytest.mark.slow
def test_python_example_runs_as_a_plain_script(tmp_path: Path) -> None:
    """No `if __name__ == "__main__"` guard needed: the worker never re-runs the script."""
    import os
    import subprocess
    import sys

    script = tmp_path / "toy.py"
    script.write_text(code_blocks("python")[0])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for _ in range(2):  # the second run is the re-run cell: nothing to train
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "completed 24" in done.stdout


@pytest.mark.slow
def test_demo_resumes_from_the_checkpoint_the_killed_run_saved(tmp_path: Path) -> None:
    """The 30-second demo's bash block, as written, in a folder holding its spec file:
    the kill comes after a checkpoint, so the resume continues from it and completes."""
    import os
    import shutil
    import signal
    import subprocess
    import sys

    demo = next(block for block in code_blocks("bash") if "kill -9" in block)
    (tmp_path / "jobs" / "examples").mkdir(parents=True)
    shutil.copy(REPO / "jobs" / "examples" / "digits.yaml", tmp_path / "jobs" / "examples")
    bin_dir = tmp_path / "bin"  # `colabrun` is this interpreter's, on this checkout
    bin_dir.mkdir()
    (bin_dir / "colabrun").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m colabrun "$@"\n')
    (bin_dir / "colabrun").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    shell = subprocess.Popen(["bash", "-c", demo], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        out, _ = shell.communicate(timeout=600)
    finally:
        if shell.poll() is None:  # timed out: the shell, and the run in its background
            os.killpg(shell.pid, signal.SIGKILL)
            shell.communicate()
    assert shell.returncode == 0, out
    killed = (tmp_path / "run.log").read_text()
    assert "saved step-" in killed and "completed" not in killed, killed
    status_at = re.search(r"^job\s+digits-cnn\b", out, flags=re.MULTILINE)  # `status`
    assert status_at, out
    resumed, status = out[:status_at.start()], out[status_at.start():]
    assert "resuming from step-" in resumed and "no checkpoint yet" not in resumed, out
    assert "job 'digits-cnn' completed: 8/8 epochs" in resumed, out
    assert re.search(r"^status\s+completed", status, flags=re.MULTILINE), out
    assert "resumed from step-" in status, out
