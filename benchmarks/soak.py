"""The ``soak`` case: many runtime deaths, each resumed on a new runtime, ending bitwise equal.

On Colab the VM dies with its local disk; the user runs the same command on a new runtime,
which continues from what reached the root. Here every runtime is a simulated one
(:class:`colabrun.runner.sim.Runtime`: its own processes and ``/tmp``, gone with it) running
``python -m colabrun run SPEC`` on a small supervised digits job with a short lease
(:mod:`benchmarks.soak_runtime`), and dies whole: mid-step, in a local save, in an upload, in
a ``state.json`` write, in a rotation, or at a random time (:mod:`benchmarks.soak_plan`,
seeded). A job takes deaths until it completes on its own or the soak has them all; one more
runtime then finishes it. Checked after each runtime: it resumed from the root's newest
committed checkpoint, never a local copy, never a fresh start once the root held one; after
each death, that checkpoint equals the uninterrupted run's at the same step, where it saved
one (:mod:`benchmarks.soak_reference`); after each job: its status is ``completed``, every
line of its ``metrics.jsonl`` parses as JSON, and every tensor of its final checkpoint's
payload equals (``torch.equal``) the uninterrupted run's.

``python -m benchmarks --only soak --deaths 100`` (docs/fault_injection.md#the-soak).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak_plan import Tally, phase_rounds, plan_death, tally
from benchmarks.soak_reference import Reference, final_payload
from benchmarks.soak_runtime import Life, SoakJob, check_resume, live, step_of
from colabrun.runner.commands.chaos import first_difference
from colabrun.runner.sim import refusal
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

#: epochs of each job (45 steps each): ten deaths or so take one most of the way
EPOCHS = 30


@dataclass
class JobEnd:
    """One job's end: its status, and how it compares with the uninterrupted run.

    Attributes:
        number: the job's number.
        job_dir: its folder under its root.
        deaths: the runtimes killed on it.
        status: its final status (``None``: no ``state.json``).
        divergence: the first tensor (a path into the tracked objects) differing from the
            uninterrupted run's, ``None`` when all are equal.
        bad_metrics_lines: lines of its ``metrics.jsonl`` that do not parse as JSON.
    """

    number: int
    job_dir: Path
    deaths: int
    status: str | None
    divergence: str | None
    bad_metrics_lines: int


@dataclass
class SoakReport:
    """All of the soak: every runtime, every job's end, every problem found."""

    seed: int
    lives: list[Life] = field(default_factory=list)
    jobs: list[JobEnd] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def deaths(self) -> list[Life]:
        """The runtimes killed."""
        return [life for life in self.lives if life.ended == "killed"]

    @property
    def divergences(self) -> int:
        """Jobs whose final checkpoint differs from the uninterrupted run's, and deaths
        whose newest root checkpoint differs from its checkpoint at the same step."""
        return (sum(job.divergence is not None for job in self.jobs)
                + sum(life.divergence is not None for life in self.lives))

    def tally(self) -> Tally:
        """Deaths per phase and the durable work they lost."""
        deaths = self.deaths
        return tally([life.phase or "time" for life in deaths], [life.lost for life in deaths])


def soak(deaths: int, scratch: Path, *, seed: int = 0, epochs: int = EPOCHS,
         say: Callable[[str], None] = print) -> SoakReport:
    """Kill ``deaths`` runtimes, resume each on a new one, and check every job's end.

    Args:
        deaths: runtimes to kill in all.
        scratch: a folder for the jobs and the uninterrupted run (each runtime's log,
            kill log and spec stay there).
        seed: draws the deaths; death ``i`` is the same for the same seed and root.
        epochs: each job's length.
        say: called with a line per runtime and per job.

    Raises:
        RuntimeError: runtimes cannot be simulated here (``refusal()``), or the
            uninterrupted run failed.
    """
    reason = refusal()
    if reason is not None:
        raise RuntimeError(f"the soak needs simulated runtimes: {reason}")
    started = time.monotonic()
    report = SoakReport(seed)
    expected = Reference(scratch / "reference", epochs)
    say(f"soak: seed {seed}, {deaths} deaths, jobs of {epochs} epochs; "
        f"uninterrupted run in {time.monotonic() - started:.1f} s")
    phases = phase_rounds(random.Random(seed))
    while len(report.deaths) < deaths:
        job = SoakJob(scratch / f"job-{len(report.jobs)}", len(report.jobs), epochs)
        killed = _kill_and_finish(job, deaths - len(report.deaths), phases, report,
                                  expected, say)
        end = end_of(job, killed, expected)
        report.jobs.append(end)
        if end.status != "completed" or end.divergence or end.bad_metrics_lines:
            report.problems.append(f"job {end.number} ended {end}")
        say(f"job {end.number}: {killed} deaths, {end.status}, "
            f"{'diverged at ' + end.divergence if end.divergence else 'bitwise equal'}")
        if end.status != "completed":
            break  # a job that cannot finish: the rest would be the same
    report.wall_s = time.monotonic() - started
    return report


def _kill_and_finish(job: SoakJob, budget: int, phases: Iterator[str], report: SoakReport,
                     expected: Reference, say: Callable[[str], None]) -> int:
    """Kill runtimes on ``job`` until ``budget`` died or it completed; then finish it."""
    killed = 0
    while killed < budget:
        number = len(report.deaths)
        death = plan_death(next(phases), random.Random(f"{report.seed}-{number}"),
                           root_checkpoints=len(job.committed()))
        life = live(job, death)
        if life.ended == "killed":
            _compare_newest(job, life, expected)
        _record(life, report, say, number)
        if life.ended != "killed":
            return killed
        killed += 1
    _record(live(job, None), report, say, None)
    return killed


def _compare_newest(job: SoakJob, life: Life, expected: Reference) -> None:
    """Compare the checkpoint ``life``'s death left as the root's newest (the next
    runtime's start) with the uninterrupted run's at the same step."""
    newest = job.newest()
    theirs = expected.at_step(step_of(newest)) if newest else None
    if newest is None or theirs is None:
        return
    life.checked = True
    ours = CheckpointStore(job.job_dir, Storage()).load_payload(newest)
    life.divergence = first_difference(theirs, ours)


def _record(life: Life, report: SoakReport, say: Callable[[str], None],
            number: int | None) -> Life:
    report.lives.append(life)
    report.problems += check_resume(life)
    if life.divergence is not None:
        report.problems.append(f"job {life.job}, runtime {life.index}: the root's newest "
                               f"checkpoint after its death differs from the uninterrupted "
                               f"run's at step {life.durable}, first at {life.divergence}")
    start = f"resumed from {life.resumed}" if life.resumed else (
        "fresh start" if "fresh start" in life.log else "died before resuming")
    if life.ended != "killed":
        say(f"  job {life.job}, runtime {life.index} ({start}): {life.ended}, "
            f"{life.seconds:.1f} s")
        return life
    assert life.death is not None
    entry = life.entry or {}
    where = f"at {entry['point']} ({entry['thread']})" if entry else "at a time"
    same = ("unchecked" if not life.checked else
            "same as uninterrupted" if life.divergence is None else "DIVERGED")
    newest = f"step {life.durable} ({same})" if life.durable else "none"
    say(f"  death {number} (seed {report.seed}), job {life.job}, runtime {life.index} "
        f"({start}): asked {life.death.describe()}; died {life.phase} {where}, step "
        f"{life.reached}; root newest {newest}: {life.lost} steps lost; "
        f"{life.seconds:.1f} s")
    return life


def end_of(job: SoakJob, deaths: int, expected: Reference) -> JobEnd:
    """How ``job`` ended, compared with the uninterrupted run's final payload."""
    state = StateFile(job.job_dir, Storage()).read()
    status = state.status.value if state is not None else None
    payload = final_payload(job.job_dir) if status == "completed" else None
    divergence = first_difference(expected.final, payload) if payload is not None else "(none)"
    return JobEnd(job.number, job.job_dir, deaths, status, divergence,
                  bad_lines(job.job_dir / "metrics.jsonl"))


def bad_lines(path: Path) -> int:
    """Lines of a JSON-lines file that do not parse (a missing file: one)."""
    if not path.exists():
        return 1
    bad = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    return bad


# -- the benchmark case -----------------------------------------------------------------

def soak_case(config: Any, scratch: Path) -> list[Any]:
    """The ``soak`` case's rows: deaths per phase, work lost, divergences, problems."""
    from benchmarks.cases import Row

    reason = refusal()
    if reason is not None:
        print(f"soak skipped: {reason}", file=sys.stderr)
        return [Row("soak (skipped)", math.nan, "", detail={"skipped": reason})]
    report = soak(config.soak_deaths, scratch, seed=config.soak_seed,
                  say=lambda line: print(line, file=sys.stderr, flush=True))
    counts = report.tally()
    detail = {"seed": report.seed, "per_phase": counts.per_phase, "deaths": [
        _death_json(life) for life in report.deaths], "problems": report.problems}
    rows = [Row("soak: deaths", counts.deaths, "", detail=detail),
            *(Row(f"  {phase}", n, "") for phase, n in counts.per_phase.items()),
            Row("soak: lost per death, mean", counts.lost_mean, "steps",
                samples=[float(life.lost) for life in report.deaths]),
            Row("soak: lost per death, max", counts.lost_max, "steps"),
            Row("soak: divergences", report.divergences, "", target="0",
                meets=report.divergences == 0, detail={"jobs": len(report.jobs)}),
            Row("soak: problems", len(report.problems), "", target="0",
                meets=not report.problems),
            Row("soak: wall time", report.wall_s, "s")]
    return rows


def _death_json(life: Life) -> dict[str, Any]:
    asked = life.death.knob or life.death.describe() if life.death else None
    return {"job": life.job, "runtime": life.index, "asked": asked, "phase": life.phase,
            "entry": life.entry, "resumed_from": life.resumed, "reached": life.reached,
            "durable": life.durable, "lost": life.lost, "checked": life.checked,
            "divergence": life.divergence, "seconds": round(life.seconds, 2)}
