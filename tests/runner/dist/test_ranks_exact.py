"""Tier 3: a job of 2 ranks, in 2 processes (DDP over gloo) or as 2 virtual ranks in one,
killed in every way the issue names, ends bitwise equal to an uninterrupted 2-process run.

Real processes throughout: the CLI's supervisor starts the ranks' processes; a rank is
SIGKILLed or SIGSTOPped by ``COLABRUN_KILL_AT`` with ``COLABRUN_KILL_PROCESS=1``; a whole
runtime dies in the simulator (its ``/tmp`` with it), and the next runtime, with another
number of processes, continues from the root. Each resume is checked to start mid-epoch,
past the first step, from the checkpoint the test expects.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.runner.sim import Runtime, refusal
from colabrun.state.checkpoints import CheckpointStore, parse_checkpoint_name
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, final_payload, run_cli, write_spec_file

pytestmark = pytest.mark.slow

NAME = "ddp"
EPOCHS = 3  # 96 samples, batches of 8 per rank: 6 steps an epoch
RESUMED = re.compile(r"resuming from (step-\d+-g\d+) \(step (\d+), epoch \d+/\d+ from batch (\d+)")


def spec(root: Path, *, processes: int, epochs: int = EPOCHS, **overrides: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "name": NAME, "entrypoint": "tests.ddp_job:train", "epochs": epochs, "seed": 5,
        "params": {"lr": 0.01}, "root": str(root / "runs"), "local_dir": str(root / "local"),
        "supervise": processes > 1 or overrides.pop("supervise", False),
        "distributed": {"ranks": 2, "processes": processes},
        "checkpoint": {"every_steps": 4, "every_s": None, "keep_last": 2,
                       "max_overhead": None},
        "watchdog": {"heartbeat_s": 0.2, "max_restarts": 2},
        **overrides,
    }
    return JobSpec.model_validate(fields)


def run_to_end(folder: Path, job: JobSpec, env: dict[str, str] | None = None) -> str:
    spec_file = write_spec_file(folder / "spec.json", job)
    done = run_cli("run", str(spec_file), cwd=folder, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted 2-process run."""
    folder = tmp_path_factory.mktemp("reference")
    output = run_to_end(folder, spec(folder, processes=2))
    assert "training 2 ranks in 2 processes" in output, output
    return final_payload(folder / "runs" / NAME)


def test_two_virtual_ranks_in_one_process_train_the_two_processes_weights(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    result = runner.run(spec(tmp_path, processes=1))
    assert result.status.value == "completed" and result.value == 2
    assert_exactly_equal(final_payload(tmp_path / "runs" / NAME), reference)


def resumed_mid_epoch(output: str, job_dir: Path) -> tuple[str, int]:
    """The checkpoint the last resume in ``output`` started from, checked to be mid-epoch,
    past the first step, and recorded as the session's start."""
    found = RESUMED.findall(output)
    assert found, f"no mid-epoch resume:\n{output[-4000:]}"
    name, step, batch = found[-1][0], int(found[-1][1]), int(found[-1][2])
    assert step > 0 and batch > 0, output[-4000:]
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.sessions[-1].resumed_from == name
    return name, step


#: 30 ms a step: a save's local commit (milliseconds) ends long before the kill
SLOWER = {"lr": 0.01, "step_sleep": 0.03}
KILL = {"COLABRUN_KILL_AT": "step:11", "COLABRUN_KILL_PROCESS": "1"}


def test_a_rank_killed_mid_epoch_restarts_the_group_exactly(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    # step 11 is epoch 1's 5th: the save of step 8 (epoch 1, batch 2) is committed by then,
    # that of step 10 maybe (the group dies with the leader's background writes)
    output = run_to_end(tmp_path, spec(tmp_path, processes=2, params=SLOWER), KILL)
    assert "process 1 was killed by SIGKILL" in output, output[-4000:]
    name, step = resumed_mid_epoch(output, tmp_path / "runs" / NAME)
    assert step in (8, 10), output[-4000:]
    assert_exactly_equal(final_payload(tmp_path / "runs" / NAME), reference)


def test_a_stopped_rank_is_found_hung_with_both_stacks_logged_and_restarted_exactly(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    job = spec(tmp_path, processes=2, params=SLOWER,
               watchdog={"heartbeat_s": 0.2, "max_restarts": 2, "stall_floor_s": 4.0,
                         "stall_factor": 2.0})
    output = run_to_end(tmp_path, job, {
        **KILL, "COLABRUN_KILL_HOW": "stop", "COLABRUN_KILL_LOG": str(tmp_path / "kills.log")})
    assert "looks hung" in output, output[-4000:]
    log = (tmp_path / "runs" / NAME / "log" / "colabrun.log").read_text()
    for process in (0, 1):
        assert re.search(rf"stacks of process {process}", log), log[-4000:]
    # faulthandler's frames: each process's main thread, in the training function
    sections = re.split(r"thread stacks of process \d", log)[1:]
    assert len(sections) == 2 and all("ddp_job.py" in section for section in sections), log
    name, step = resumed_mid_epoch(output, tmp_path / "runs" / NAME)
    assert step in (8, 10), output[-4000:]
    assert_exactly_equal(final_payload(tmp_path / "runs" / NAME), reference)


# -- whole runtimes: 2 processes, then 1, then 2 ---------------------------------------------

SLOW_EPOCHS = 24  # 144 steps of ~50 ms: kills land mid-run


def _newest_under_root(job_dir: Path) -> str | None:
    names = CheckpointStore(job_dir, Storage()).list_names()
    keyed = [(parse_checkpoint_name(n), n) for n in names]
    return max((k, n) for k, n in keyed if k is not None)[1] if keyed else None


SLOW = {"lr": 0.01, "step_sleep": 0.05}


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted 2-process run of the slower job (24 epochs)."""
    folder = tmp_path_factory.mktemp("slow-reference")
    run_to_end(folder, spec(folder, processes=2, epochs=SLOW_EPOCHS, params=SLOW))
    return final_payload(folder / "runs" / NAME)


@pytest.mark.skipif(refusal() is not None, reason=str(refusal()))
def test_runtimes_of_two_then_one_then_two_processes_continue_from_the_root_exactly(
    tmp_path: Path, slow_reference: dict[str, Any]
) -> None:
    params = SLOW
    root = tmp_path / "shared"
    job_dir = root / "runs" / NAME
    layouts = [2, 1, 2]
    for index, processes in enumerate(layouts):
        job = spec(root, processes=processes, epochs=SLOW_EPOCHS, params=params,
                   supervise=True, local_dir=None, lease_s=4.0)
        spec_file = write_spec_file(tmp_path / f"spec{index}.json", job)
        newest_before = _newest_under_root(job_dir)
        argv = [sys.executable, "-m", "colabrun", "run", str(spec_file)]
        with Runtime(argv, shared=[tmp_path], cwd=tmp_path, log=tmp_path / f"rt{index}.log",
                     env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                          "PYTHONPATH": str(Path(__file__).parents[3])}) as rt:
            if newest_before is not None:  # from the root's newest: the old /tmp is gone
                found = rt.wait_for(r"resuming from (step-\d+-g\d+)", timeout=120)
                assert found[1] == newest_before, rt.output()
            if index == len(layouts) - 1:
                assert rt.wait(timeout=300) == 0, rt.output()[-4000:]
                break
            # killed once two more checkpoints reached the root: mid-epoch ones, mostly
            rt.wait_for(r"durable: step-\d+", timeout=120)
            rt.wait_for(rf"epoch {index * 8 + 6}/{SLOW_EPOCHS} done", timeout=120)
            rt.kill()
    out = (tmp_path / "rt1.log").read_text()
    assert "training 2 ranks as virtual ranks in 1 process" in out, out[-3000:]
    assert_exactly_equal(final_payload(job_dir), slow_reference)


def test_a_deadline_on_the_leader_stops_both_ranks_after_one_durable_save(
    tmp_path: Path, slow_reference: dict[str, Any]
) -> None:
    """The runtime's budget runs out mid-job: the leader decides the deadline's save, both
    ranks take part in it and stop, the session ends (exit 3) with that save under the root;
    a new runtime continues from it, exactly."""
    window_s = 12.0  # start-up (seconds) plus part of the ~8 s of training
    for attempt in range(3):
        root = tmp_path / f"vm1-{attempt}"
        job = spec(root, processes=2, epochs=SLOW_EPOCHS, params=SLOW, budget_s=1000.0,
                   deadline_margin_s=0.0)
        started = time.time() - (1000.0 - window_s)
        spec_file = write_spec_file(tmp_path / "spec.json", job)
        done = run_cli("run", str(spec_file), cwd=tmp_path, timeout=300,
                       env={"COLABRUN_RUNTIME_STARTED_AT": str(started)})
        output = done.stdout + done.stderr
        state = StateFile(root / "runs" / NAME, Storage()).read()
        assert state is not None, output[-3000:]
        if done.returncode == 3 and state.progress.global_step > 0:
            break
        window_s *= 2  # a start-up slower than the window (a loaded machine): again
    assert done.returncode == 3 and state.reason == "deadline", output[-3000:]
    assert state.latest_checkpoint is not None
    assert state.latest_checkpoint.step == state.progress.global_step > 0, output[-3000:]
    assert state.latest_checkpoint.step < SLOW_EPOCHS * 6, "stopped mid-job"
    fresh = tmp_path / "vm2"
    shutil.copytree(root / "runs", fresh / "runs")  # the root alone: the local disk died
    resumed = run_cli("resume", NAME, "--root", str(fresh / "runs"), cwd=tmp_path,
                      timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {state.latest_checkpoint.name}" in resumed.stdout
    assert_exactly_equal(final_payload(fresh / "runs" / NAME), slow_reference)


def test_four_ranks_moved_to_another_layout_are_refused_before_training_unless_allowed(
    tmp_path: Path
) -> None:
    """4 ranks in 2 processes (2 virtual ranks each, DDP's no_sync between them): their
    gradients cannot be summed in the same order in 1 process, so a resume there is refused
    in one line, with nothing trained, unless ``allow_inexact``."""
    def four(processes: int, epochs: int, **policy: Any) -> JobSpec:
        job = spec(tmp_path, processes=processes, epochs=epochs)
        return job.model_copy(update={"supervise": processes > 1, "distributed":
                                      job.distributed.model_copy(update={
                                          "ranks": 4, "processes": processes, **policy})})

    run_to_end(tmp_path, four(2, epochs=1))
    refused = run_cli("run", str(write_spec_file(tmp_path / "one.json", four(1, epochs=2))),
                      cwd=tmp_path)
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "ran in 2 process(es) and would continue in 1" in error[0], \
        refused.stderr
    assert "allow_inexact" in error[0] and "Traceback" not in refused.stdout + refused.stderr
    state = StateFile(tmp_path / "runs" / NAME, Storage()).read()
    assert state is not None and state.progress.global_step == 3  # nothing trained
    run_to_end(tmp_path, four(2, epochs=2))  # the same layout goes on
    allowed = run_to_end(tmp_path, four(1, epochs=3, allow_inexact=True))
    assert "completed: 3/3 epochs" in allowed


def test_chaos_on_a_two_process_spec_reports_exact(tmp_path: Path) -> None:
    spec_file = write_spec_file(tmp_path / "spec.json", spec(tmp_path, processes=2))
    done = run_cli("chaos", str(spec_file), "--kills", "3", "--scratch",
                   str(tmp_path / "scratch"), cwd=tmp_path, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "verdict: exact" in out, out[-3000:]
    assert "its 2 ranks as virtual ranks in one process" in out
    assert re.search(r"kill 1: .* resumed from step \d+", out), out[-3000:]
