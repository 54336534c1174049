"""The issue's "Bad input" list, one test each, through the real ``colabrun`` in a subprocess.

Each bad input must give (a) ONE ``colabrun: error:`` line naming the file or field
and the fix, (b) a non-zero exit code, and (c) no write at all: every file under
the test's folder (the spec, the root, the cwd) is byte-identical afterwards, and
a root that did not exist was not created. A corrupt ``state.json`` is never
silently replaced; ``colabrun repair`` rebuilds it on request.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from colabrun.jobs.spec import JobSpec
from colabrun.state.model import JobState, Status
from tests.helpers import (
    copy_job,
    digits_spec,
    finished_digits_job,
    run_cli,
    tmpfs,
    tree_snapshot,
    write_spec_file,
)

DIGITS = "colabrun.jobs.examples.digits:train"
NAME = "digits"

# Every test starts the real `python -m colabrun.runner.commands.cli` (which imports torch): 2-3 s
# each on 2 cores, so the whole module is in the slow tier. The messages alone are
# checked in-process, fast, by tests/jobs/test_spec.py and tests/runner/commands/test_cli.py.
pytestmark = pytest.mark.slow

def _valid_fields(root: Path) -> dict[str, Any]:
    return digits_spec(root, name=NAME, epochs=1).to_json_dict()


def _json_spec(tmp_path: Path, root: Path, **changes: Any) -> Path:
    """A JSON spec file: the tiny digits job with ``changes`` applied, unvalidated."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**_valid_fields(root), **changes}, indent=2))
    return path


def _yaml_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``colabrun: error:`` line; no traceback, nothing else printed."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("colabrun: error: "), output
    assert result.stdout.strip() == "", output
    return lines[0]


def _refused(tmp_path: Path, spec_path: Path | str, root: Path, *, exit_code: int = 2,
             args: tuple[str, ...] = ()) -> str:
    """Run the spec; assert the exit code and that nothing under ``tmp_path`` changed."""
    before = tree_snapshot(tmp_path)
    root_existed = root.exists()
    result = run_cli("run", str(spec_path), "--root", str(root), *args, cwd=tmp_path)
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert tree_snapshot(tmp_path) == before
    if not root_existed:
        assert not root.exists(), f"{root} was created"
    assert not (tmp_path / "colabrun-runs").exists()  # nor the default root
    return _one_error_line(result)


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, JobSpec]]:
    """A completed one-epoch digits job (trained once, in-process), to copy from."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    yield root, finished_digits_job(root)


def _state(root: Path) -> JobState:
    return JobState.model_validate_json((root / NAME / "state.json").read_bytes())


def _checkpoints(root: Path) -> list[str]:
    return sorted(os.listdir(root / NAME / "checkpoints"))


# -- malformed files ----------------------------------------------------------------


def test_malformed_yaml(tmp_path: Path) -> None:
    spec = _yaml_spec(tmp_path, f"name: {NAME}\nentrypoint: colabrun.jobs.examples.digits:train\n"
                                "epochs: [1, 2\nseed: 7\n")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert str(spec) in line
    assert "malformed YAML" in line
    assert "line 4" in line  # where the parser noticed the unclosed list
    assert "fix the syntax" in line


def test_malformed_toml(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'name = "{NAME}"\nentrypoint = "{DIGITS}"\nepochs = \n')
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert str(spec) in line
    assert "malformed TOML" in line
    assert "line 3" in line
    assert "fix the syntax" in line


def test_malformed_json(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{\n  "name": "digits",\n  "epochs": 1,\n}\n')
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert str(spec) in line
    assert "malformed JSON at line 4" in line
    assert "fix the syntax" in line


# -- invalid fields -----------------------------------------------------------------


def test_unknown_field(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", epoch=3)  # a typo of `epochs`
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert f"{spec}: epoch: " in line
    assert "Extra inputs are not permitted" in line
    assert "remove it or fix its spelling" in line
    assert "colabrun schema" in line


def test_mistyped_field(tmp_path: Path) -> None:
    text = f"name: {NAME}\nentrypoint: colabrun.jobs.examples.digits:train\nepochs: ten\n"
    spec = _yaml_spec(tmp_path, text)
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert f"{spec}: epochs: " in line
    assert "(got 'ten')" in line
    assert "use a whole number" in line


def test_zero_epochs(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", epochs=0)
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert f"{spec}: epochs: " in line
    assert "greater than 0 (got 0)" in line
    assert "use a larger value" in line


def test_negative_epochs(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", epochs=-3)
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert f"{spec}: epochs: " in line
    assert "greater than 0 (got -3)" in line
    assert "use a larger value" in line


def _assert_bad_name(line: str, spec: Path, name: str) -> None:
    assert f"{spec}: name: " in line
    assert f"{name!r} is not a safe job name" in line
    assert "letters, digits, '-' or '_'" in line  # how to fix


def test_name_with_slash(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", name="team/digits")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    _assert_bad_name(line, spec, "team/digits")


def test_name_with_dot_dot(tmp_path: Path) -> None:
    # `..` would make the job folder the root's parent: here, the cwd itself
    spec = _json_spec(tmp_path, tmp_path / "runs", name="..")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    _assert_bad_name(line, spec, "..")


def test_name_with_spaces(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", name="my digits job")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    _assert_bad_name(line, spec, "my digits job")


# -- entrypoints ----------------------------------------------------------------------


def test_entrypoint_that_does_not_import(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", entrypoint="no_such_colabrun_module:train")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert "entrypoint 'no_such_colabrun_module:train'" in line
    assert "does not import" in line
    assert "ModuleNotFoundError" in line
    assert "check the spelling" in line


def test_entrypoint_attribute_that_does_not_exist(tmp_path: Path) -> None:
    spec = _json_spec(tmp_path, tmp_path / "runs", entrypoint="colabrun.jobs.examples.digits:trian")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert "entrypoint 'colabrun.jobs.examples.digits:trian'" in line
    assert "has no attribute 'trian'" in line
    assert "check the name after the ':'" in line


def test_entrypoint_that_is_not_callable(tmp_path: Path) -> None:
    # a module-level tuple: imports fine, but cannot be called with the run handle
    spec = _json_spec(tmp_path, tmp_path / "runs", entrypoint="colabrun.jobs.spec:DEFINING_FIELDS")
    line = _refused(tmp_path, spec, tmp_path / "runs")
    assert "entrypoint 'colabrun.jobs.spec:DEFINING_FIELDS' is a tuple, not a function" in line
    assert "point it at a function taking the run handle" in line


# -- the root, the spec file, the state file --------------------------------------------


@pytest.fixture
def unwritable_root(tmp_path: Path) -> Iterator[Path]:
    """A root that cannot be created.

    A read-only parent stops an ordinary user, but not root (CAP_DAC_OVERRIDE
    ignores the mode bits), and CI often runs as root: there the parent is a
    regular file, so creating the root fails with ENOTDIR.
    """
    if os.geteuid() != 0:
        parent = tmp_path / "read-only"
        parent.mkdir()
        parent.chmod(0o555)
        yield parent / "runs"
        parent.chmod(0o755)
    else:
        parent = tmp_path / "a-file"
        parent.write_text("not a folder\n")
        yield parent / "runs"


def test_root_that_is_not_writable(tmp_path: Path, unwritable_root: Path) -> None:
    spec = _json_spec(tmp_path, unwritable_root)
    line = _refused(tmp_path, spec, unwritable_root, exit_code=5)
    assert f"cannot start job {NAME!r}: the root {unwritable_root} cannot take its files" in line
    assert (f"{unwritable_root.parent} is not writable" in line
            or f"{unwritable_root.parent} is a file, not a folder" in line), line
    assert "choose another root (--root" in line


def test_local_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    local = tmp_path / "a-file" / "local"
    spec = _json_spec(tmp_path, tmp_path / "runs", local_dir=str(local))
    line = _refused(tmp_path, spec, tmp_path / "runs", exit_code=2)
    assert f"cannot start job {NAME!r}: local_dir {str(local)!r} cannot stage its checkpoints" \
        in line
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in line
    assert "set local_dir to a writable folder" in line


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only filesystem (a small tmpfs mounted ``ro``: root ignores
    mode bits, not a read-only mount); skipped where mounting is refused."""
    with tmpfs(tmp_path / "read-only", "ro,size=1m") as folder:
        yield folder


def test_local_dir_on_a_read_only_disk(tmp_path: Path, read_only_folder: Path) -> None:
    local = read_only_folder / "local"
    spec = _json_spec(tmp_path, tmp_path / "runs", local_dir=str(local))
    line = _refused(tmp_path, spec, tmp_path / "runs", exit_code=2)
    assert f"local_dir {str(local)!r} cannot stage its checkpoints" in line
    assert f"{read_only_folder} is not writable" in line
    assert "training function" not in line  # colabrun's own check, not the user's code


def test_a_full_root_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "size=64k") as full:
        root = full / "runs"
        line = _refused(tmp_path, _json_spec(tmp_path, root), root, exit_code=5)
    assert f"the root {root} cannot take its files: {full} has" in line
    assert "free, and a checkpoint needs 1.0 MB" in line


def test_missing_spec_file(tmp_path: Path) -> None:
    line = _refused(tmp_path, "no-such-spec.yaml", tmp_path / "runs")
    assert "no-such-spec.yaml: spec file not found" in line
    assert f"check the path (cwd is {tmp_path})" in line


GARBAGE = b'{"schema_version": 1, "name": "digits", "status": "runn\x00\xff garbage'


def test_corrupt_state_file(tmp_path: Path, finished_job: tuple[Path, JobSpec]) -> None:
    root, spec_file = copy_job(finished_job, tmp_path)
    state_file = root / NAME / "state.json"
    state_file.write_bytes(GARBAGE)
    line = _refused(tmp_path, spec_file, root, exit_code=5)
    assert str(state_file) in line
    assert "is corrupt" in line
    assert f"`colabrun repair {NAME} --root {root}`" in line
    assert state_file.read_bytes() == GARBAGE  # never silently replaced
    assert not list((root / NAME).glob("state.json.corrupt-*"))


# -- repair, and changes of an existing job's spec ---------------------------------------


def test_repair_rebuilds_from_checkpoints_then_resume_completes(
    tmp_path: Path, finished_job: tuple[Path, JobSpec]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    job_dir = root / NAME
    original = _state(root)
    (job_dir / "state.json").write_bytes(GARBAGE)

    repaired = run_cli("repair", NAME, "--root", str(root), cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"`colabrun resume {NAME} --root {root}`" in repaired.stdout
    (aside,) = job_dir.glob("state.json.corrupt-*")
    assert aside.read_bytes() == GARBAGE  # kept for inspection
    assert aside.name in repaired.stdout
    rebuilt = _state(root)
    assert rebuilt.status is Status.STOPPED
    assert rebuilt.spec_fingerprint == original.spec_fingerprint
    assert [c.name for c in rebuilt.checkpoints] == [c.name for c in original.checkpoints]
    assert [c.sha256 for c in rebuilt.checkpoints] == [c.sha256 for c in original.checkpoints]
    assert rebuilt.progress == original.progress

    resumed = run_cli("resume", NAME, "--root", str(root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {original.checkpoints[-1].name}" in resumed.stdout
    final = _state(root)
    assert final.status is Status.COMPLETED
    assert final.progress.global_step == original.progress.global_step  # nothing retrained


def test_repair_of_a_valid_state_changes_nothing(
    tmp_path: Path, finished_job: tuple[Path, JobSpec]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    before = tree_snapshot(root)
    result = run_cli("repair", NAME, "--root", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to repair" in result.stdout
    assert tree_snapshot(root) == before


def test_spec_change_is_refused_unless_forced_but_more_epochs_train(
    tmp_path: Path, finished_job: tuple[Path, JobSpec]
) -> None:
    root, _ = copy_job(finished_job, tmp_path)
    _, spec = finished_job
    spec = spec.model_copy(update={"root": str(root)})

    other_params = write_spec_file(
        tmp_path / "other-params.json",
        spec.model_copy(update={"params": {**spec.params, "lr": 0.5}}))
    line = _refused(tmp_path, other_params, root, exit_code=2)
    assert f"job {NAME!r}" in line
    assert "created with other params" in line
    assert "'lr': 0.05" in line and "'lr': 0.5" in line  # old -> new
    assert "--force" in line

    other_seed = write_spec_file(tmp_path / "other-seed.json",
                                 spec.model_copy(update={"seed": 8}))
    line = _refused(tmp_path, other_seed, root, exit_code=2)
    assert "created with other seed" in line

    longer = write_spec_file(tmp_path / "longer.json", spec.model_copy(update={"epochs": 2}))
    trained = run_cli("run", str(longer), "--root", str(root), cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    state = _state(root)
    assert state.status is Status.COMPLETED
    assert (state.progress.epochs_done, state.progress.epochs_total) == (2, 2)
    assert state.progress.global_step == 90  # one more epoch of 45 steps
    assert len(state.sessions) == 2
    first_latest = _state(finished_job[0]).latest_checkpoint
    assert first_latest is not None
    assert state.sessions[-1].resumed_from == first_latest.name

    # forced: the new params are adopted and the job goes on from its checkpoints
    new_lr = spec.model_copy(update={"params": {**spec.params, "lr": 0.5}, "epochs": 3})
    forced_spec = write_spec_file(tmp_path / "forced.json", new_lr)
    forced = run_cli("run", str(forced_spec), "--root", str(root), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "--force" in forced.stdout + forced.stderr  # warned
    state = _state(root)
    assert state.defining["params"]["lr"] == 0.5
    assert state.spec_fingerprint == new_lr.fingerprint()
    assert state.progress.global_step == 135  # continued, not restarted
