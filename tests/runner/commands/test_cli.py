"""The ``colabrun`` commands: validate, status, list, resume, and run of a finished job.

Most tests call :func:`colabrun.runner.commands.cli.main` in-process (same parser, dispatch and
exit codes as the console script, without a torch import per test); the ones
marked ``slow`` run the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabrun.jobs.loading import load_spec
from colabrun.jobs.spec import JobSpec
from colabrun.runner.commands.cli import main
from colabrun.state.model import JobState, Status
from tests.helpers import (
    REPO,
    copy_job,
    digits_spec,
    finished_digits_job,
    run_cli,
    tree_snapshot,
)

NAME = "digits"

#: one save per epoch keeps the one training run of this module short
EPOCH_END_ONLY = {"every_steps": None, "every_s": None, "at_epoch_end": True, "keep_last": 2,
                  "max_overhead": None}

MINIMAL_YAML = """\
name: tiny
entrypoint: colabrun.jobs.examples.digits:train
epochs: 2
params: {lr: 0.1}
checkpoint:
  every_steps: 5
"""


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, JobSpec]]:
    """A completed one-epoch digits job, trained once in-process; tests copy or only read it."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    yield root, finished_digits_job(root, checkpoint=EPOCH_END_ONLY)


def _state(root: Path, name: str = NAME) -> JobState:
    return JobState.model_validate_json((root / name / "state.json").read_bytes())


def _latest_checkpoint(root: Path) -> str:
    latest = _state(root).latest_checkpoint
    assert latest is not None
    return latest.name


def _checkpoint_dirs(root: Path, name: str = NAME) -> list[str]:
    return sorted(p.name for p in (root / name / "checkpoints").iterdir())


def _error_lines(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("colabrun: error: ") for line in lines), err
    return lines


# -- validate -------------------------------------------------------------------------


def test_validate_prints_the_normalised_spec_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(MINIMAL_YAML)
    before = tree_snapshot(tmp_path)
    assert main(["validate", str(spec_file)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    printed = json.loads(out)
    assert printed == load_spec(spec_file).to_json_dict()
    # normalised: every field present, defaults filled in, nested ones too
    assert set(printed) == set(JobSpec.model_fields)
    assert printed["seed"] == 0 and printed["device"] == "auto"
    assert printed["checkpoint"] == {"every_steps": 5, "every_s": 300.0,
                                     "at_epoch_end": "auto", "max_overhead": 0.02,
                                     "snapshot": "auto", "keep_last": 3,
                                     "keep_best": None}
    assert JobSpec.model_validate(printed) == load_spec(spec_file)  # round-trips
    assert tree_snapshot(tmp_path) == before


def test_validate_prints_every_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: a b\nentrypoint: nocolon\nepochs: 0\n"
                         "checkpoint: {keep_last: 0}\ncolour: red\n")
    assert main(["validate", str(spec_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = _error_lines(err)
    paths = ["name", "entrypoint", "epochs", "checkpoint.keep_last", "colour"]
    assert len(lines) == len(paths), err
    for path in paths:
        assert any(f"{spec_file}: {path}: " in line for line in lines), (path, err)


# -- status and list ------------------------------------------------------------------


def test_status_and_list_of_an_empty_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    assert main(["status", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"no jobs under {root}"
    assert main(["list", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"no jobs under {root}"
    assert main(["status", "--json", "--root", str(root)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not root.exists()  # looking does not create


def test_status_shows_a_table_of_jobs(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    before = tree_snapshot(root)
    assert main(["status", "--root", str(root)]) == 0
    header, row, *rest = capsys.readouterr().out.splitlines()
    assert rest == []
    assert header.split() == ["JOB", "STATUS", "EPOCH", "STEP", "LAST", "CHECKPOINT", "AGE",
                              "SESS", "LEFT"]
    cells = row.split()
    assert cells[:5] == [NAME, "completed", "1/1", "45", _latest_checkpoint(root)]
    assert cells[-2:] == ["1", "-"], "one session; no live runtime"
    assert tree_snapshot(root) == before


def test_status_name_shows_the_job_in_detail(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["status", NAME, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert NAME in out and str(root / NAME) in out
    assert "completed" in out
    assert "1/1" in out
    assert _latest_checkpoint(root) in out


def test_status_name_json_is_the_job_state(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, spec = finished_job
    assert main(["status", NAME, "--json", "--root", str(root)]) == 0
    state = JobState.model_validate_json(capsys.readouterr().out)
    assert state == _state(root)
    assert state.status is Status.COMPLETED
    assert state.spec_fingerprint == spec.fingerprint()
    assert (state.progress.epochs_done, state.progress.global_step) == (1, 45)
    assert len(state.sessions) == 1


def test_status_json_lists_every_job_state(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["status", "--json", "--root", str(root)]) == 0
    states = [JobState.model_validate(item) for item in json.loads(capsys.readouterr().out)]
    assert states == [_state(root)]


def test_list_names_each_job_and_its_status(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["list", "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{NAME}\tcompleted"]


def test_status_and_list_survive_a_corrupt_job(
    finished_job: tuple[Path, JobSpec], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    shutil.copytree(root / NAME, root / "broken")
    (root / "broken" / "state.json").write_bytes(b"{ torn")
    before = tree_snapshot(root)

    assert main(["list", "--root", str(root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("broken\t") and "corrupt" in listed[0]
    assert listed[1] == f"{NAME}\tcompleted"

    assert main(["status", "--root", str(root)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:2] == ["broken", "unreadable"]

    assert main(["status", "broken", "--root", str(root)]) == 5
    (line,) = _error_lines(capsys.readouterr().err)
    assert "state.json is corrupt" in line and "colabrun repair broken" in line
    assert tree_snapshot(root) == before


def test_status_of_an_unknown_job_says_how_to_list_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    assert main(["status", "nope", "--root", str(root)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"no job 'nope' under {root}" in line
    assert f"`colabrun list --root {root}`" in line
    assert not root.exists()


# -- resume and run ---------------------------------------------------------------------


def test_resume_of_an_unknown_job_exits_2_and_says_how_to_list_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    assert main(["resume", "nope", "--root", str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = _error_lines(err)
    assert f"no job 'nope' under {root}" in line
    assert f"`colabrun list --root {root}`" in line
    assert "colabrun run SPEC" in line
    assert not root.exists()


def test_resume_of_an_unknown_job_beside_others_writes_nothing(
    finished_job: tuple[Path, JobSpec], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    before = tree_snapshot(root)
    assert main(["resume", "digitz", "--root", str(root)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "colabrun list" in line
    assert tree_snapshot(root) == before
    assert not (root / "digitz").exists()


def test_run_of_a_completed_job_prints_its_summary_and_trains_nothing(
    finished_job: tuple[Path, JobSpec], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, spec_file = copy_job(finished_job, tmp_path)
    state_before = (root / NAME / "state.json").read_bytes()
    checkpoints_before = _checkpoint_dirs(root)

    assert main(["run", str(spec_file), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"job {NAME!r} completed: 1/1 epochs, step 45" in out
    assert checkpoints_before[-1] in out
    assert "fresh start" not in out and "resuming" not in out
    assert (root / NAME / "state.json").read_bytes() == state_before
    assert len(_state(root).sessions) == 1
    assert _checkpoint_dirs(root) == checkpoints_before


def test_resume_of_a_completed_job_trains_nothing(
    finished_job: tuple[Path, JobSpec], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    state_before = (root / NAME / "state.json").read_bytes()
    assert main(["resume", NAME, "--root", str(root)]) == 0
    assert f"job {NAME!r} completed: 1/1 epochs" in capsys.readouterr().out
    assert (root / NAME / "state.json").read_bytes() == state_before


@pytest.mark.slow
def test_real_second_run_of_a_completed_job_trains_nothing(
    finished_job: tuple[Path, JobSpec], tmp_path: Path
) -> None:
    root, spec_file = copy_job(finished_job, tmp_path)
    state_before = (root / NAME / "state.json").read_bytes()
    checkpoints_before = _checkpoint_dirs(root)
    result = run_cli("run", str(spec_file), "--root", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"job {NAME!r} completed: 1/1 epochs, step 45" in result.stdout
    assert (root / NAME / "state.json").read_bytes() == state_before
    assert _checkpoint_dirs(root) == checkpoints_before


@pytest.mark.slow
def test_real_status_name_json_and_resume_of_unknown_job(
    finished_job: tuple[Path, JobSpec], tmp_path: Path
) -> None:
    root, _ = finished_job
    status = run_cli("status", NAME, "--json", "--root", str(root), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert JobState.model_validate_json(status.stdout) == _state(root)

    missing = tmp_path / "runs"
    resumed = run_cli("resume", "nope", "--root", str(missing), cwd=tmp_path)
    assert resumed.returncode == 2
    assert "Traceback" not in resumed.stderr
    (line,) = _error_lines(resumed.stderr)
    assert "colabrun list" in line
    assert not missing.exists()


LIGHT_COMMANDS = """
import sys
from colabrun.runner.commands.cli import main
root, spec = sys.argv[1:]
for command in (["status"], ["status", "digits", "--verify"], ["list"], ["logs", "digits"],
                ["checkpoint", "digits"], ["stop", "digits"]):
    assert main([*command, "--root", root]) == 0, command
assert main(["validate", spec]) == 0 and main(["schema"]) == 0
print("torch imported:", "torch" in sys.modules)
"""


def test_the_light_commands_never_import_torch(
    finished_job: tuple[Path, JobSpec], tmp_path: Path
) -> None:
    # `colabrun stop` from a second cell or a terminal should answer at once; importing
    # torch alone takes seconds on a busy runtime
    root, spec_file = copy_job(finished_job, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", LIGHT_COMMANDS, str(root), str(spec_file)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch imported: False" in done.stdout, done.stdout
    assert sorted(p.name for p in (root / NAME / "control").iterdir()) == ["checkpoint", "stop"]


def test_resume_without_a_checkpoint_says_fresh_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a job whose first runtime died before its first save: only spec.json exists
    root = tmp_path / "runs"
    spec = digits_spec(root, name="early", epochs=1, checkpoint=EPOCH_END_ONLY)
    (root / "early").mkdir(parents=True)
    (root / "early" / "spec.json").write_text(json.dumps(spec.to_json_dict()))
    assert main(["resume", "early", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint yet, fresh start" in out
    state = _state(root, "early")
    assert state.status is Status.COMPLETED and state.progress.global_step == 45


# -- conventions: help, version, near misses ---------------------------------------------


def test_a_bare_colabrun_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: colabrun") and "resume" in out and "doctor" in out


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"colabrun {version('colabrun')}"


def test_a_mistyped_command_names_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stauts"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == "colabrun: error: unknown command 'stauts'; did you mean 'status'?"
    assert main(["xyzzy"]) == 2
    assert "`colabrun --help` lists the commands" in capsys.readouterr().err


def test_a_mistyped_job_name_names_the_nearest(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["status", "digitz", "--root", str(root)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"no job 'digitz' under {root}; did you mean 'digits'?" in line


def test_run_of_a_job_name_points_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "digits", "--root", str(tmp_path / "runs")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "'digits' is not a spec file" in line and "`colabrun resume digits`" in line
    assert list(tmp_path.iterdir()) == []


def test_status_verify_needs_a_job_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--verify", "--root", str(tmp_path)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "--verify checks one job's checkpoints" in line and "status NAME --verify" in line


def test_plot_metric_takes_one_value_and_the_name_stays(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["plot", "--metric", "loss", "digits", "--root", str(root),
                 "--out", "x.jpg"]) == 2  # parsed: the name was not swallowed
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == ("colabrun: error: --out x.jpg: the plot is a PNG image; name the file "
                    "x.png")


def test_root_help_mentions_the_spec_only_where_one_is_read(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for command, says_spec in (("run", True), ("resume", False), ("status", False)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert ("the spec's root" in " ".join(capsys.readouterr().out.split())) is says_spec


def test_every_command_has_an_example_and_every_argument_a_help() -> None:
    import argparse

    from colabrun.runner.commands.cli import COMMANDS
    from colabrun.runner.commands.parser import EXAMPLES, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS) == set(EXAMPLES)
    for name, command in sub.choices.items():
        assert f"example:\n  {EXAMPLES[name]}" in command.format_help()
        words = EXAMPLES[name].split(" >")[0].split()
        assert words[:2] == ["colabrun", name]
        assert parser.parse_args(words[1:]).command == name  # the example parses
        for action in command._actions:
            assert action.help, f"colabrun {name}: {action.dest} has no help"


def test_list_json_names_each_job_and_its_status(
    finished_job: tuple[Path, JobSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = finished_job
    assert main(["list", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": NAME, "status": "completed"}]
