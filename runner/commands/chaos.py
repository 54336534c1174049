"""``colabrun chaos``: prove that a training function resumes exactly.

Runs the job once uninterrupted (the reference), then again with N SIGKILLs
at random points (mid-step, mid-upload, mid-save before the manifest,
mid-state-write, right after a commit), resuming after each, all in a scratch
root on the CPU. Then it compares every tracked tensor and every logged
metric with the reference. Each run is a child process, which dies with this one;
the kills are real. A diverged verdict names the causes the runs warned about
(:mod:`colabrun.runner.train.exactness`), read from each child's output and job log,
before the usual ones.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import torch

from colabrun.jobs.errors import CheckpointError, ColabrunError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.platform import child_entry
from colabrun.runner.train.exactness import causes_in
from colabrun.runner.train.metrics import BOOKKEEPING, read_metrics
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.jobdir import JobDir
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

#: the kinds of kill and the point each one happens at
KILL_POINTS = {
    "mid-step": "step",
    "mid-upload": "save.payload_writing",
    "mid-save": "save.payload_written",
    "mid-state-write": "state.tmp_written",
    "after-commit": "save.renamed",
}
#: how a chaos child starts, with this process's pid and the task file as arguments: dying
#: with this process (a killed ``colabrun chaos`` leaves no run training on) before it
#: imports torch
CHILD_ENTRY = child_entry("from colabrun.runner.commands.chaos import _child_main\n"
                          "_child_main(sys.argv[2])\n")

HINTS = ("usual causes: an object with state not passed to run.track (an LR scheduler, a "
         "GradScaler, an EMA, a random generator of your own such as np.random.default_rng "
         "or a torch.Generator), a data loader that shuffles by itself instead of through "
         "run.batches, a value carried across steps in a local variable instead of "
         "run.extras, or random numbers drawn in another thread")


class ChaosError(ColabrunError, RuntimeError):
    """A chaos child failed for another reason than a kill."""


@dataclass(frozen=True)
class Kill:
    """One kill: where, at which step, and the work it cost."""

    kind: str
    point: str
    step: int
    resumed_step: int
    lost_s: float

    @property
    def redone_steps(self) -> int:
        """Steps trained before the kill that the resume trains again."""
        return max(0, self.step - self.resumed_step)


@dataclass
class ChaosReport:
    """What ``colabrun chaos`` found."""

    exact: bool
    kills: list[Kill] = field(default_factory=list)
    first_tensor: str | None = None
    first_step: int | None = None
    checkpoints_reference: int = 0
    checkpoints_chaos: int = 0
    reference_s: float = 0.0
    chaos_s: float = 0.0
    #: what the runs warned breaks an exact resume (``inexact resume:`` lines)
    causes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``exact`` or ``diverged``."""
        return "exact" if self.exact else "diverged"

    def as_json(self) -> dict[str, Any]:
        """The report as JSON values (``colabrun chaos --json``)."""
        return {"verdict": self.verdict, **asdict(self),
                "kills": [{**asdict(k), "redone_steps": k.redone_steps} for k in self.kills]}

    def render(self) -> str:
        """The report as text."""
        lines = [f"verdict: {self.verdict}"]
        for i, kill in enumerate(self.kills, 1):
            lines.append(f"kill {i}: {kill.kind} ({kill.point}) at step {kill.step}; resumed "
                         f"from step {kill.resumed_step}: {kill.redone_steps} steps, "
                         f"{kill.lost_s:.1f} s redone")
        if self.kills:
            mean = sum(k.redone_steps for k in self.kills) / len(self.kills)
            lines.append(f"work redone per kill: {mean:.1f} steps on average")
        lines.append(f"checkpoint commits (local and uploads): {self.checkpoints_chaos} with "
                     f"kills, {self.checkpoints_reference} in the reference")
        lines.append(f"time: reference {self.reference_s:.1f} s, with kills {self.chaos_s:.1f} s")
        if not self.exact:
            if self.first_step is not None:
                lines.append(f"first step whose metrics differ: {self.first_step}")
            if self.first_tensor is not None:
                lines.append(f"first tensor that differs: {self.first_tensor}")
            lines.extend(f"the runs warned: {cause}" for cause in self.causes)
            lines.append(HINTS)
        return "\n".join(lines)


def run_chaos(spec: JobSpec, *, kills: int, seed: int = 0, epochs: int | None = None,
              scratch: Path, out: Any = None) -> ChaosReport:
    """Run the reference and the killed-and-resumed job; compare them.

    Args:
        spec: the job; it runs on the CPU, in-process in each child, under ``scratch``.
        kills: how many SIGKILLs to deliver.
        seed: chooses the kill points.
        epochs: train this many epochs instead of the spec's (a small budget).
        scratch: a folder for both runs; the job's real root is never touched.
    """
    update: dict[str, Any] = {"device": "cpu", "supervise": False,
                              "local_dir": str(scratch / "local")}
    if epochs is not None:
        update["epochs"] = epochs
    base = spec.model_copy(update=update)
    report = ChaosReport(exact=False)
    started = time.monotonic()
    counts = _child(base, scratch / "reference", scratch / "reference.counts")
    report.reference_s = time.monotonic() - started
    report.checkpoints_reference = counts.get("save.renamed", 0)
    total_steps = counts.get("step", 1)
    rng = random.Random(seed)
    chaos_root = scratch / "chaos"
    started = time.monotonic()
    for left in range(kills, 0, -1):
        kind = rng.choice(sorted(KILL_POINTS))
        point = KILL_POINTS[kind]
        done = _progress(chaos_root, spec.name) / max(total_steps, 1)
        remaining = counts.get(point, 1) * (1 - done)
        nth = rng.randint(1, max(1, int(remaining / left)))  # spread over what is left
        log = scratch / "kills.jsonl"
        killed = _child(base, chaos_root, scratch / "chaos.counts", kill=(point, nth), log=log)
        if not killed.get("_killed"):
            break  # the job finished before that point came round
        report.kills.append(_kill_record(kind, log, base, chaos_root))
        _print(out, f"chaos: kill {len(report.kills)}: {kind} at step "
                    f"{report.kills[-1].step}")
    final_counts = _child(base, chaos_root, scratch / "chaos.counts")
    report.chaos_s = time.monotonic() - started
    report.checkpoints_chaos = _tally(scratch / "chaos.saves") + final_counts.get(
        "save.renamed", 0)
    _compare(report, scratch / "reference" / spec.name, chaos_root / spec.name)
    report.causes = _causes(scratch, spec.name)
    return report


def _child(spec: JobSpec, root: Path, counts_file: Path, *, kill: tuple[str, int] | None = None,
           log: Path | None = None) -> dict[str, Any]:
    """Run the job in a child process; return its point counts (``_killed`` if killed)."""
    root.mkdir(parents=True, exist_ok=True)
    task = root.parent / "task.pkl"
    task.write_bytes(cloudpickle.dumps({
        "spec": spec.model_copy(update={"root": str(root)}), "counts": str(counts_file),
        "kill": kill, "log": str(log) if log else None,
        "saves": str(root.parent / "chaos.saves") if kill else None,
    }))
    done = subprocess.run([sys.executable, "-c", CHILD_ENTRY, str(os.getpid()), str(task)],
                          capture_output=True, text=True)
    with open(root.parent / f"{root.name}.out", "a") as out:  # for _causes: warnings included
        out.write(done.stdout + done.stderr)
    if done.returncode == -9 and kill is not None:
        return {"_killed": True}
    if done.returncode != 0:
        raise ChaosError(f"a chaos run failed (exit {done.returncode}), not by a kill:\n"
                         f"{(done.stdout + done.stderr).strip()[-2000:]}")
    return dict(json.loads(counts_file.read_text()))


def _progress(root: Path, name: str) -> int:
    try:
        state = StateFile(root / name, Storage()).read()
    except (ColabrunError, OSError):
        return 0
    return state.progress.global_step if state else 0


def newest_committed(spec: JobSpec, root: Path) -> tuple[int, float] | None:
    """Step and time of the newest checkpoint that verifies, under the root or on this
    runtime's disk: where a resume starts."""
    job = JobDir(root, spec.name,
                 local_root=Path(spec.local_dir) if spec.local_dir else None)
    best: tuple[int, float] | None = None
    for store in (job.store, job.local):
        for name in sorted(store.list_names(), reverse=True):
            try:
                manifest = store.verify(name)
            except CheckpointError:
                continue
            if best is None or manifest.step > best[0]:
                best = (manifest.step, manifest.created_at)
            break
    return best


def _kill_record(kind: str, log: Path, spec: JobSpec, root: Path) -> Kill:
    entry = json.loads(log.read_text().splitlines()[-1])
    resumed_step = (newest_committed(spec, root) or (0, 0.0))[0]
    step = int(entry["step"] or 0)
    state = StateFile(root / spec.name, Storage()).read()
    step_s = state.timings.step_s if state and state.timings.step_s else 0.0
    return Kill(kind=kind, point=entry["point"], step=step, resumed_step=resumed_step,
                lost_s=max(0, step - resumed_step) * step_s)


def _causes(scratch: Path, name: str) -> list[str]:
    """What the runs warned breaks exactness: in the children's output and the job logs."""
    text = ""
    for run in ("reference", "chaos"):
        for path in (scratch / f"{run}.out", scratch / run / name / "log" / "colabrun.log"):
            if path.exists():
                text += path.read_text(errors="replace") + "\n"
    return causes_in(text)


def _tally(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _compare(report: ChaosReport, reference: Path, chaos: Path) -> None:
    report.first_tensor = first_difference(_final(reference), _final(chaos))
    report.first_step = first_metric_difference(
        read_metrics(reference / "metrics.jsonl", warn=_warn),
        read_metrics(chaos / "metrics.jsonl", warn=_warn))
    report.exact = report.first_tensor is None and report.first_step is None


def _final(job_dir: Path) -> Any:
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    return CheckpointStore(job_dir, Storage()).load_payload(state.latest_checkpoint.name)["tracked"]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first tensor (or value) that differs between two states."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
        return None if same else path.lstrip(".")
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}".lstrip(".")
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path} (length)".lstrip(".")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else path.lstrip(".") or "(top level)"


def first_metric_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int | None:
    """The first step whose logged metrics differ (bookkeeping fields aside)."""
    def table(records: list[dict[str, Any]]) -> dict[tuple[int, str], Any]:
        return {(int(r["step"]), k): v for r in records for k, v in r.items()
                if k not in BOOKKEEPING}

    ta, tb = table(a), table(b)
    differing = [step for (step, key) in ta.keys() | tb.keys()
                 if ta.get((step, key)) != tb.get((step, key))]
    return min(differing) if differing else None


def _warn(message: str) -> None:
    print(f"colabrun: WARNING: {message}", file=sys.stderr, flush=True)


def _print(out: Any, line: str) -> None:
    print(line, file=out or sys.stdout, flush=True)


def _child_main(task_path: str) -> None:
    """Entry point of a chaos child: run the job in-process with the task's hooks."""
    from colabrun import runner
    from colabrun.runner.faults import CountPoints, KillAt, combine
    from colabrun.runner.train.live import LiveProgress

    task = cloudpickle.loads(Path(task_path).read_bytes())
    spec: JobSpec = task["spec"]
    counter = CountPoints()
    start = newest_committed(spec, Path(str(spec.root)))
    progress = LiveProgress(step=start[0] if start else 0)

    def count_steps(point: str) -> None:
        if point == "step":
            progress.step += 1

    hooks: list[Any] = [counter, count_steps]
    if task["saves"]:
        saves = Path(task["saves"])

        def tally(point: str) -> None:
            if point == "save.renamed":
                with open(saves, "a") as f:
                    f.write("1\n")

        hooks.append(tally)
    if task["kill"]:
        point, nth = task["kill"]
        hooks.append(KillAt(point, nth, progress=progress, log=Path(task["log"])))
    runner.run(spec, on_point=combine(*hooks))
    Path(task["counts"]).write_text(json.dumps(counter.counts))

