"""One runtime of the soak (:mod:`benchmarks.soak`): started on a job, killed whole at its
death, and what it said about where it resumed from.

A point death is asked for with ``COLABRUN_KILL_AT=POINT@TIER:N`` and
``COLABRUN_KILL_HOW=stop``: the process passing the point notes it in the kill log and stops
there (SIGSTOP), so that nothing more happens in it; this module reads that log every
:data:`POLL_S` and kills the runtime at once, every process and its ``/tmp``. A time death is
a kill at a time after the runtime's first step.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.soak_plan import UNREACHED, Death, phase_of
from colabrun.runner.sim import Runtime
from colabrun.state.checkpoints import CheckpointStore, parse_checkpoint_name
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

REPO = Path(__file__).resolve().parent.parent
NAME = "d"
#: the job: digits (~2 ms steps here), 45 steps an epoch, a save every 10 and at epoch ends
SPEC: dict[str, Any] = {
    "name": NAME, "entrypoint": "benchmarks.jobs:digits", "seed": 7, "platform": "local",
    "supervise": True, "lease_s": 4.0,  # short: the next runtime takes over in seconds
    "checkpoint": {"every_steps": 10, "every_s": None, "at_epoch_end": True, "keep_last": 2,
                   "max_overhead": None}}
PARAMS = {"width": 8}
#: how often a runtime's kill log and progress are read (seconds)
POLL_S = 0.002
#: a runtime that neither trains nor passes its point this long after its start failed
START_TIMEOUT_S = 180.0
#: a point not passed this long after the runtime's first step: the runtime is killed then
POINT_TIMEOUT_S = 6.0
#: the runtime that finishes a job, at most (seconds)
FINISH_TIMEOUT_S = 600.0
RESUMED = re.compile(r"resuming from (step-\d+-g\d+(?:-r\d+)?)")
LOCAL_COPY = "resuming from the local copy"


@dataclass
class Life:
    """One runtime: how it was to die, what it resumed from, how it ended.

    Attributes:
        job: the job's number.
        index: the runtime's number in the job.
        death: how it was to die (``None``: the runtime finishing the job).
        expected: the root's newest committed checkpoint at its start.
        resumed: what its log says it resumed from (``None``: a fresh start, or not said).
        ended: ``killed``, ``completed`` (a kill that came once the job had completed,
            as the runtime exited, included) or ``failed``.
        phase: what its death interrupted.
        entry: its kill log's line (point, step, time, thread, pid), if it passed its point.
        reached: the step it reached: its job's progress file, or where it started.
        durable: the step of the root's newest checkpoint after its death.
        checked: whether that checkpoint was compared with the uninterrupted run's at
            the same step (that run saved there too).
        divergence: the first path where it differs from it, ``None`` when equal.
        seconds: from its start to its end.
        log: its output.
    """

    job: int
    index: int
    death: Death | None
    expected: str | None
    resumed: str | None = None
    ended: str = ""
    phase: str | None = None
    entry: dict[str, Any] | None = None
    reached: int = 0
    durable: int = 0
    checked: bool = False
    divergence: str | None = None
    seconds: float = 0.0
    log: str = ""

    @property
    def lost(self) -> int:
        """Durable work the death cost, in steps."""
        return self.reached - self.durable


class SoakJob:
    """A job's files: its root, spec, progress file (the step after each step) and logs."""

    def __init__(self, folder: Path, number: int, epochs: int) -> None:
        self.number = number
        self.folder = folder
        self.root = folder / "root"
        self.progress = folder / "progress"
        self.root.mkdir(parents=True, exist_ok=True)
        spec = {**SPEC, "epochs": epochs, "root": str(self.root),
                "params": {**PARAMS, "progress_file": str(self.progress)}}
        self.spec_file = folder / "spec.json"
        self.spec_file.write_text(json.dumps(spec, indent=2) + "\n")
        self.runtimes = 0

    @property
    def job_dir(self) -> Path:
        return self.root / NAME

    def committed(self) -> list[str]:
        """The root's committed checkpoints."""
        return CheckpointStore(self.job_dir, Storage()).list_names()

    def newest(self) -> str | None:
        """The root's newest committed checkpoint."""
        keyed = [(key, n) for n in self.committed() if (key := parse_checkpoint_name(n))]
        return max(keyed)[1] if keyed else None

    def is_completed(self) -> bool:
        """Whether ``state.json`` says the job completed."""
        state = StateFile(self.job_dir, Storage()).read()
        return state is not None and state.status.value == "completed"

    def step(self) -> int:
        """The step the progress file holds (0: none since it was reset)."""
        try:
            return int.from_bytes(self.progress.read_bytes()[:8], "little")
        except OSError:
            return 0


def step_of(name: str | None) -> int:
    """The step of a checkpoint's name (0 for none)."""
    key = parse_checkpoint_name(name) if name else None
    return key[0] if key else 0


def live(job: SoakJob, death: Death | None) -> Life:
    """Run one runtime on ``job`` until ``death`` (``None``: until the job ends)."""
    index, job.runtimes = job.runtimes, job.runtimes + 1
    life = Life(job.number, index, death, expected=job.newest())
    kills = job.folder / f"kills-{index}.jsonl"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if death is not None and death.knob is not None:
        env.update(COLABRUN_KILL_AT=death.knob, COLABRUN_KILL_HOW="stop",
                   COLABRUN_KILL_LOG=str(kills))
    job.progress.write_bytes(bytes(8))
    argv = [sys.executable, "-m", "colabrun", "run", str(job.spec_file)]
    started = time.monotonic()
    with Runtime(argv, shared=[job.folder], cwd=REPO, env=env,
                 log=job.folder / f"runtime-{index}.log") as runtime:
        life.ended = _until_death(runtime, job, death, kills, started)
        life.seconds = time.monotonic() - started
        life.log = runtime.output()
    if life.ended == "killed" and job.is_completed():
        life.ended = "completed"  # killed as it exited, the job done: no death
    if life.ended == "killed":
        life.entry = _read_entry(kills)
        life.phase = _phase(life)
        life.reached = max(job.step(), step_of(life.expected))
        life.durable = step_of(job.newest())
    match = RESUMED.search(life.log)
    life.resumed = match[1] if match else None
    return life


def _until_death(runtime: Runtime, job: SoakJob, death: Death | None, kills: Path,
                 started: float) -> str:
    """Watch ``runtime`` until ``death`` comes (then kill it whole) or it ends itself."""
    first_step: float | None = None
    while True:
        if not runtime.alive():
            return "completed" if runtime.wait() == 0 else "failed"
        now = time.monotonic()
        if first_step is None and job.step() > 0:
            first_step = now
        if death is not None and _is_due(death, kills, first_step, now):
            runtime.kill()
            return "killed"
        if (first_step is None and now - started > START_TIMEOUT_S) or (
                death is None and now - started > FINISH_TIMEOUT_S):
            runtime.kill()
            return "failed"
        time.sleep(POLL_S)


def _is_due(death: Death, kills: Path, first_step: float | None, now: float) -> bool:
    if death.point is not None and _has_line(kills):
        return True  # its process stopped at the point: kill the runtime now
    if first_step is None:
        return False
    limit = death.after_s if death.point is None else POINT_TIMEOUT_S
    return now - first_step >= limit


def _has_line(path: Path) -> bool:
    try:
        return path.stat().st_size > 0  # one line, written by one write()
    except FileNotFoundError:
        return False


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    return json.loads(lines[0]) if lines else None


def _phase(life: Life) -> str:
    if life.death is not None and life.death.point is not None and life.entry is None:
        return UNREACHED
    entry = life.entry or {}
    return phase_of(entry.get("point"), entry.get("thread"))


def check_resume(life: Life) -> list[str]:
    """What is wrong with where ``life`` resumed from: it must be the root's newest
    committed checkpoint (a fresh start only while the root holds none), never a copy on
    the runtime's own disk (which died with the runtime before)."""
    where = f"job {life.job}, runtime {life.index}"
    if LOCAL_COPY in life.log:
        return [f"{where} resumed from a local copy:\n{life.log[-2000:]}"]
    if life.resumed is not None:
        if life.resumed != life.expected:
            return [f"{where} resumed from {life.resumed}, not the root's newest "
                    f"{life.expected}:\n{life.log[-2000:]}"]
    elif "fresh start" in life.log:
        if life.expected is not None:
            return [f"{where} started fresh although the root holds {life.expected}"]
    elif life.ended != "killed":
        return [f"{where} ended ({life.ended}) without saying where it resumed from:\n"
                f"{life.log[-2000:]}"]
    if life.ended == "failed":
        return [f"{where} failed:\n{life.log[-2000:]}"]
    return []
