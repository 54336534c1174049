"""The benchmark cases: each returns rows of figures with their references."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import jobs
from benchmarks.ddp import ddp_case
from benchmarks.reseed import reseed_case
from benchmarks.runtime_death import runtime_death
from benchmarks.soak import soak_case
from colabrun.jobs.spec import JobSpec
from colabrun.runner.api import run as run_job
from colabrun.runner.display.console import Console
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.jobdir import JobDir
from colabrun.state.storage import Storage

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    """Sizes and repetitions (``quick``: a smoke test of the suite itself)."""

    reps: int = 3
    #: step_ratio's runs: 20 epochs of 45 steps, ~2 s, several adaptive intervals (at 8, a
    #: run held 1-2 adaptive saves, and its metered share was one save's cost more or less)
    digits_epochs: int = 20
    mlp_width: int = 4096
    mlp_layers: int = 4
    mlp_saves: int = 4
    kills: int = 8
    runtime_deaths: int = 5  # kills per job and mode in runtime_death (each ~12 s)
    soak_deaths: int = 10  # runtimes the soak kills (each ~8 s)
    soak_seed: int = 0
    quick_mode: bool = False

    @classmethod
    def quick(cls) -> Config:
        return cls(reps=1, digits_epochs=3, mlp_width=512, mlp_layers=2, mlp_saves=2, kills=2,
                   runtime_deaths=1, soak_deaths=2, quick_mode=True)


@dataclass
class Row:
    """One figure: a median, its reference and ratio, and the target it is held to."""

    name: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    target: str = ""
    meets: bool | None = None
    samples: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference_value in (None, 0):
            return None
        return self.value / self.reference_value  # type: ignore[operator]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "reference": self.reference, "reference_value": self.reference_value,
                "ratio": self.ratio, "target": self.target, "meets": self.meets,
                "samples": self.samples, "detail": self.detail}


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"{'benchmark':<34} {'median':>12} {'reference':>28} {'ratio':>7}  "
             f"{'target':<14} ok"]
    for row in rows:
        ref = (f"{row.reference} {_fmt(row.reference_value, row.unit)}"
               if row.reference_value is not None else "")
        ratio = f"{row.ratio:.3f}" if row.ratio is not None else ""
        ok = {True: "yes", False: "NO", None: ""}[row.meets]
        lines.append(f"{row.name:<34} {_fmt(row.value, row.unit):>12} {ref[-28:]:>28} "
                     f"{ratio:>7}  {row.target:<14} {ok}")
    return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.3f} s"
    if unit == "B":
        return f"{value / 2**20:.0f} MiB"
    if unit == "B/s":
        return f"{value / 2**20:.0f} MiB/s"
    return f"{value:.2f} {unit}"


@contextlib.contextmanager
def scratch_dir(path: Path | None) -> Iterator[Path]:
    """``path`` (kept), or a temporary folder (removed)."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="colabrun-bench-") as tmp:
        yield Path(tmp)


def _quiet() -> Console:
    return Console(out=io.StringIO())


def _spec(name: str, entrypoint: str, epochs: int, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({"name": name, "entrypoint": entrypoint, "epochs": epochs,
                                   "supervise": False, "platform": "local", **fields})


def _in_process(spec: JobSpec, root: Path) -> Any:
    result = run_job(spec, root=root, progress=False, console=_quiet())
    assert result.status == "completed", (spec.name, result.status, result.reason)
    return result.value


# -- 1. step time against a bare loop ------------------------------------------------

DIGITS = "benchmarks.jobs:digits"
# every 25 steps and nothing else (epoch-end and adaptive saves would be other triggers,
# with their costs; the adaptive cadence is on by default)
EVERY_25 = {"every_steps": 25, "every_s": None, "at_epoch_end": False, "max_overhead": None}
# a control, the loop's own cost: no trigger at all
NO_CHECKPOINTS = {"every_s": None, "at_epoch_end": False, "max_overhead": None}
# the adaptive policy alone: epoch-end saves are another trigger, with their own cost
ADAPTIVE = {"max_overhead": 0.02, "every_s": None, "at_epoch_end": False}
# the spec's defaults: the adaptive cadence at 2%, epoch-end saves within its budget
# (``at_epoch_end: auto``), a save every 300 s (never, in runs this short)
DEFAULT: dict[str, Any] = {}


def _per_step(result: dict[str, Any]) -> list[float]:
    """Seconds per step of every epoch but the first (warm-up)."""
    return [s / n for s, n in zip(result["epoch_s"][1:], result["steps"][1:], strict=True) if n]


#: the digits CNN 8x wider (~40 ms steps here): the adaptive cadence saves every few steps,
#: where few steps pay for no save and the meter has little to compare with, so its figure is
#: held to the clock's there too; runs of this many epochs (~9 s)
WIDE, WIDE_EPOCHS = {"width": 128}, 5


def step_ratio(config: Config, scratch: Path) -> list[Row]:
    """Step time under colabrun (every 25 steps; adaptive 2%; the spec's default policy)
    against a bare loop: the digits job, and (not with ``--quick``) the 30 ms one, without
    every 25.

    This 2-core VM's speed drifts by 10-30% over seconds, more than the overhead
    measured. So the runs go in repetitions of one run per mode, in a random
    order each time; each repetition gives each mode's ratio to its own bare run
    (adjacent in time), and the figure is the median of those paired ratios,
    with a bootstrap interval over repetitions. Beside it, ``metered_overhead``:
    what the saves cost by each run's own meter (:func:`_metered_overhead`).
    """
    modes: dict[str, dict[str, Any]] = {"no_checkpoints": NO_CHECKPOINTS, "every_25": EVERY_25,
                                        "adaptive_2pct": ADAPTIVE, "default": DEFAULT}
    rows = _ratio_rows(config, scratch, "digits", {}, config.digits_epochs, modes)
    if not config.quick_mode:
        wide = {mode: modes[mode] for mode in ("no_checkpoints", "adaptive_2pct", "default")}
        rows += _ratio_rows(config, scratch, "30 ms", WIDE, WIDE_EPOCHS, wide)
    return rows


def _ratio_runs(config: Config, scratch: Path, label: str, params: dict[str, Any], epochs: int,
                modes: dict[str, dict[str, Any]]) -> tuple[dict[str, list[list[float]]],
                                                           dict[str, list[int]],
                                                           dict[str, list[float]]]:
    """Each repetition runs each mode once, in a random order: the seconds per step of
    each run, its saves and its metered share, by mode (``bare``: the bare loop)."""
    rng = random.Random(0)
    per_rep: dict[str, list[list[float]]] = {"bare": [], **{mode: [] for mode in modes}}
    saves: dict[str, list[int]] = {mode: [] for mode in modes}
    metered: dict[str, list[float]] = {mode: [] for mode in modes}
    slug = label.replace(" ", "")
    for rep in range(3 * config.reps):
        order = ["bare", *modes]
        rng.shuffle(order)
        for mode in order:
            if mode == "bare":
                per_rep["bare"].append(_per_step(jobs.digits(jobs.BareRun(params, epochs))))
                continue
            spec = _spec(f"steps-{slug}-{mode}-{rep}", DIGITS, epochs, params=params,
                         checkpoint=modes[mode])
            result = _in_process(spec, scratch / f"{slug}-{mode}-{rep}")
            per_rep[mode].append(_per_step(result))
            saves[mode].append(len(result["stalls"]))
            metered[mode].append(_metered_overhead(result))
    return per_rep, saves, metered


def _ratio_rows(config: Config, scratch: Path, label: str, params: dict[str, Any], epochs: int,
                modes: dict[str, dict[str, Any]]) -> list[Row]:
    """The rows of one job: each mode's median paired ratio to the bare loop, its metered
    share and what it cost beyond the control by the clock."""
    per_rep, saves, metered = _ratio_runs(config, scratch, label, params, epochs, modes)
    rng = random.Random(0)
    pooled = {mode: [x for run in runs for x in run] for mode, runs in per_rep.items()}
    bare_s = statistics.median(pooled["bare"])
    rows = [Row(f"{label} step, bare loop", bare_s, "s", samples=pooled["bare"])]
    paired = {mode: [statistics.median(run) / statistics.median(bare)
                     for run, bare in zip(per_rep[mode], per_rep["bare"], strict=True)]
              for mode in modes}
    for mode in modes:
        ratios = paired[mode]
        ratio = statistics.median(ratios)
        # what checkpointing cost beyond the loop's own cost, by the clock: the meter's
        # figure is held to it (pairs of one repetition, as the ratios)
        beyond = [r - c for r, c in zip(ratios, paired["no_checkpoints"], strict=True)]
        target, meets = ("", None) if mode == "no_checkpoints" else (
            "ratio <= 1.02", ratio <= 1.02)
        rows.append(Row(f"{label} step, {mode}", bare_s * ratio, "s", "bare", bare_s,
                        target=target, meets=meets, samples=pooled[mode],
                        detail={"paired_ratios": ratios,
                                "paired_ratio_interval_90": bootstrap_median(ratios, rng),
                                "pooled_ratio": statistics.median(pooled[mode]) / bare_s,
                                "saves_per_run": saves[mode],
                                "metered_overhead": statistics.median(metered[mode]),
                                "metered_samples": metered[mode],
                                "beyond_control": statistics.median(beyond),
                                "beyond_control_interval_90": bootstrap_median(beyond, rng)}))
    return rows


def _metered_overhead(result: dict[str, Any]) -> float:
    """The share of a run's time its saves and uploads cost, by the run's own meters, over
    the epochs :func:`_per_step` times (the first one, where the first save starts the
    writer process, left out): each save's stall, the toll of the steps that paid for it,
    and the uploads' toll (the steps that ended while one ran), each against the typical
    step just before: a pairing that this VM's drift over seconds does not blur. It is
    what the adaptive cadence paces by (``SaveTelemetry.charged_s``)."""
    charged: list[float] = result["charged_at"]
    return (charged[-1] - charged[0]) / sum(result["epoch_s"][1:])


def bootstrap_median(values: list[float], rng: random.Random, rounds: int = 2000
                      ) -> tuple[float, float]:
    """A 90% percentile-bootstrap interval of the median of ``values``."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(rounds))
    return medians[int(0.05 * rounds)], medians[int(0.95 * rounds) - 1]


# -- 2. stall per checkpoint of a ~0.8 GB state; peak memory during a save ------------

MLP = "benchmarks.jobs:big_mlp"


def _mlp_params(config: Config, **more: Any) -> dict[str, Any]:
    return {"width": config.mlp_width, "layers": config.mlp_layers, **more}


def _mlp_state(config: Config) -> dict[str, Any]:
    """The benchmark MLP's model and Adam state, after one step."""
    torch.manual_seed(0)
    model = jobs.BigMLP(config.mlp_width, config.mlp_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(8, config.mlp_width)).square().mean().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


class MemorySampler:
    """Samples this process's memory, plus its children's, every few milliseconds.

    Memory is the proportional set size (:func:`benchmarks.jobs.pss`): pages a
    forked writer shares with its parent count once, as they cost once.
    """

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), sum(jobs.pss(p) for p in [me, *_children(me)])))
            self._stop.wait(self.period_s)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _references(config: Config, scratch: Path) -> tuple[int, list[float], list[float]]:
    """The big state's size, and the times of a synchronous save and of a clone of it."""
    state = _mlp_state(config)
    tensors = _tensors(state)
    scratch.mkdir(parents=True, exist_ok=True)
    sync = _timed(lambda: jobs.sync_save(state, scratch / "sync.pt"), config.reps)
    clone = _timed(lambda: [t.clone() for t in tensors], config.reps)
    (scratch / "sync.pt").unlink()
    return sum(t.numel() * t.element_size() for t in tensors), sync, clone


def stall(config: Config, scratch: Path) -> list[Row]:
    """Stall per checkpoint of the big state (fork and copy snapshots) against a
    synchronous ``torch.save`` + fsync and an in-memory clone of the same state;
    and the peak memory of training while saving against training without saves."""
    nbytes, sync, clone = _references(config, scratch)
    sync_s, clone_s = statistics.median(sync), statistics.median(clone)
    rows = [Row("state size (MLP + Adam)", nbytes, "B"),
            Row("sync torch.save + fsync", sync_s, "s", samples=sync),
            Row("in-memory clone", clone_s, "s", samples=clone)]
    every = 6  # steps between saves: longer than a background write of the state takes
    steps = every * config.mlp_saves  # the last save at the last step: no final save
    peaks: dict[str, float] = {}
    for mode in ("none", "fork", "copy"):
        policy: dict[str, Any] = {"every_s": None, "at_epoch_end": False, "keep_last": 2,
                                  "max_overhead": None}  # saves at known steps, or none
        if mode != "none":
            policy.update(every_steps=every, snapshot=mode)
        spec = _spec(f"stall-{mode}", MLP, 1, params=_mlp_params(config, steps=steps),
                     checkpoint=policy)
        with MemorySampler() as memory:
            result = _in_process(spec, scratch / f"root-{mode}")
        # peak while training (a final save after the loop is not training's)
        peaks[mode] = max(pss for at, pss in memory.samples if at <= result["trained_until"])
        if mode == "none":
            rows.append(Row("peak memory, training without saves", peaks[mode], "B",
                            detail={"step_s_median": statistics.median(result["step_s"])}))
            continue
        stalls = result["stalls"][1:]  # the first save allocates (copy) or warms up
        value = statistics.median(stalls)
        rows.append(Row(f"stall per save, {mode} snapshot", value, "s", "sync save", sync_s,
                        target="<= 0.1 x sync", meets=value <= 0.1 * sync_s, samples=stalls,
                        detail={"vs_clone": value / clone_s,
                                "step_s_median": statistics.median(result["step_s"]),
                                "background_write": result["last_write"]}))
        rows.append(Row(f"  same, against a clone ({mode})", value, "s", "clone", clone_s,
                        target="< clone", meets=value < clone_s))
        reference = peaks["none"] + nbytes
        rows.append(Row(f"peak memory while saving ({mode})", peaks[mode], "B",
                        "train+snapshot", reference, target="<= +10%",
                        meets=peaks[mode] <= 1.1 * reference,
                        detail={"training_peak_without_saves": peaks["none"],
                                "snapshot_bytes": nbytes,
                                "memory_after_first_step": result["memory_before_first_save"]}))
    return rows


def _accelerate_available() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True


def big_save(config: Config, scratch: Path) -> list[Row]:
    """What a checkpoint of the big state costs training in all: its stall plus the
    slowdown of the steps after it, against a bare loop, for colabrun's snapshots
    (``auto``, ``fork``, ``copy``) and for a synchronous ``torch.save`` (and
    Accelerate's ``save_state``, where it is installed) in a bare loop.

    Each run trains ``every * (saves + 1)`` steps saving every ``every`` steps, so
    every save's aftermath lies inside the timed loop; a save's cost is the run's loop
    time minus the bare run's of the same repetition, over the saves. Repetitions in
    a random order, as this VM's speed drifts. Beside each cost, how long colabrun's
    saves took to commit locally (snapshot handed over to commit: the work a death of
    the process would lose meanwhile), the first save (which starts a writer) left out.
    """
    every = 6
    saves = config.mlp_saves
    params = _mlp_params(config, steps=every * (saves + 1))
    modes = ["bare", "torch.save", "auto", "fork", "copy"]
    if _accelerate_available():
        modes.insert(2, "accelerate")
    rng = random.Random(1)
    per_save: dict[str, list[float]] = {mode: [] for mode in modes if mode != "bare"}
    stalls: dict[str, list[float]] = {mode: [] for mode in ("auto", "fork", "copy")}
    commits: dict[str, list[float]] = {mode: [] for mode in stalls}
    bare_loops: list[float] = []
    for rep in range(config.reps):
        order = list(modes)
        rng.shuffle(order)
        loops: dict[str, float] = {}
        for mode in order:
            folder = scratch / f"{mode}-{rep}"
            folder.mkdir(parents=True, exist_ok=True)
            if mode in ("bare", "torch.save", "accelerate"):
                more = {} if mode == "bare" else {
                    "plain_every": every, "plain_dir": str(folder),
                    "plain_with": "torch" if mode == "torch.save" else "accelerate"}
                result = jobs.big_mlp(jobs.BareRun({**params, **more}, 1))
            else:
                spec = _spec(f"big-{mode}-{rep}", MLP, 1, params=params,
                             checkpoint={"every_steps": every, "every_s": None,
                                         "at_epoch_end": False, "max_overhead": None,
                                         "keep_last": 2, "snapshot": mode})
                result = _in_process(spec, folder / "root")
                stalls[mode].extend(result["stalls"])
                commits[mode].extend(result["write_s"][1:])
            loops[mode] = result["loop_s"]
            shutil.rmtree(folder, ignore_errors=True)
        bare_loops.append(loops["bare"])
        for mode in per_save:
            per_save[mode].append((loops[mode] - loops["bare"]) / saves)
    bare_step = statistics.median(bare_loops) / (every * (saves + 1))
    rows = [Row("big state, bare loop step", bare_step, "s", samples=bare_loops)]
    reference = statistics.median(per_save["accelerate"]) if "accelerate" in per_save else None
    for mode, costs in per_save.items():
        rows.append(_big_save_row(mode, costs, reference, stalls.get(mode)))
    rows.extend(Row(f"  local commit per big save, {mode}", statistics.median(times), "s",
                    samples=times) for mode, times in commits.items() if times)
    return rows


def _big_save_row(mode: str, costs: list[float], reference: float | None,
                  stalls: list[float] | None) -> Row:
    """A save's cost to training; colabrun's (``stalls`` given) held to half of
    Accelerate's ``save_state`` measured in the same run, where it is installed."""
    value = statistics.median(costs)
    held = stalls is not None and reference is not None
    return Row(f"cost per big save, {mode}", value, "s", "accelerate" if held else "",
               reference if held else None, target="<= 0.5 x accelerate" if held else "",
               meets=(value <= 0.5 * reference) if held and reference is not None else None,
               samples=costs,
               detail={"stall_median": statistics.median(stalls)} if stalls else {})


# -- 3. resume latency -----------------------------------------------------------------

CHILD = "from benchmarks.child import main; main()"


def _first_step_after(spec: JobSpec, root: Path, marker: Path) -> tuple[float, float]:
    """Seconds from process start, and from ``run()`` (imports done), to the first step."""
    marker.unlink(missing_ok=True)
    started = time.time()
    subprocess.run([sys.executable, "-c", CHILD, spec.model_dump_json(), str(root)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1", jobs.FIRST_STEP_ENV: str(marker)})
    first = float(marker.read_text())
    return first - started, first - float(Path(f"{marker}.entry").read_text())


def _resume_case(config: Config, scratch: Path, label: str, entrypoint: str,
                 params: dict[str, Any], epochs: int, pairs: int) -> list[Row]:
    root = scratch / f"root-{label}"
    marker = scratch / f"first-{label}"
    base = {"checkpoint": {"every_steps": 2, "every_s": None, "at_epoch_end": False,
                           "max_overhead": None}}
    # a checkpoint to resume from: train a few steps, completed
    prepared = _spec(f"resume-{label.replace(' ', '-')}", entrypoint, epochs, params=params, **base)
    _in_process(prepared, root)
    job = JobDir(root, prepared.name)
    state = job.statefile.read()
    assert state is not None and state.latest_checkpoint is not None
    name = state.latest_checkpoint.name
    payload = job.store.dir / name / "state.pt"
    fresh: list[tuple[float, float]] = []
    resumed: list[tuple[float, float]] = []
    raw: list[float] = []
    warm: list[float] = []
    more = prepared.model_copy(update={"epochs": epochs + 1})  # resumes from the newest
    for rep in range(pairs):
        fresh_spec = more.model_copy(update={"name": f"fresh-{prepared.name}-{rep}"})
        if rep % 2:  # neither kind always starts first
            resumed.append(_first_step_after(more, root, marker))
        fresh.append(_first_step_after(fresh_spec, scratch / f"fresh-{label}", marker))
        if not rep % 2:
            resumed.append(_first_step_after(more, root, marker))
    for _ in range(config.reps + 2):  # steadier than process starts: fewer samples
        raw.append(_cold_load(payload))
        warm += _timed(lambda: torch.load(payload, weights_only=True), 1)
    # main figure: from run() (imports done) to the first step, resumed minus fresh; the
    # same from process start is in the detail (equal in expectation, noisier)
    latency = [r[1] - f[1] for r, f in zip(resumed, fresh, strict=True)]
    from_start = [r[0] - f[0] for r, f in zip(resumed, fresh, strict=True)]
    value, raw_s = statistics.median(latency), statistics.median(raw)
    return [Row(f"resume latency, {label}", value, "s", "raw torch.load", raw_s,
                target="<= 1.2 x load", meets=value <= 1.2 * raw_s, samples=latency,
                detail={"from_process_start_median": statistics.median(from_start),
                        "from_process_start": from_start,
                        "run_to_first_step_fresh": [f[1] for f in fresh],
                        "run_to_first_step_resumed": [r[1] for r in resumed],
                        "interval_90": bootstrap_median(latency, random.Random(0)),
                        "reference_samples": raw,
                        "warm_torch_load_median": statistics.median(warm),
                        "ratio_to_warm_load": value / statistics.median(warm),
                        "checkpoint_bytes": payload.stat().st_size})]


def _cold_load(payload: Path) -> float:
    """Seconds of a fresh process's first ``torch.load`` of ``payload``: the reference,
    since a resume is a fresh process's first load too (the first pays ~2.5 ms of lazy
    set-up, as much as loading the digits state itself)."""
    out = subprocess.run([sys.executable, "-c", "from benchmarks.child import cold_load; "
                          "cold_load()", str(payload)], cwd=REPO, check=True, text=True,
                         capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout)


def resume(config: Config, scratch: Path) -> list[Row]:
    """Process start to first resumed step, minus the same for a fresh start."""
    # a few milliseconds in process starts that vary by ~10: the small state needs
    # more pairs (each is two ~2 s starts)
    return (_resume_case(config, scratch, "digits", DIGITS, {}, 1, pairs=6 * config.reps + 1)
            + _resume_case(config, scratch, "big MLP", MLP,
                           _mlp_params(config, steps=2), 1, pairs=config.reps + 2))


# -- 4. work lost per SIGKILL --------------------------------------------------------

POLICIES = {"default": {}, "every_25": EVERY_25, "adaptive_2pct": ADAPTIVE}


def _newest_committed_step(root: Path, name: str) -> int:
    job = JobDir(root, name)
    best = 0
    for store in (job.store, job.local):
        for checkpoint in store.list_names():
            with contextlib.suppress(Exception):
                best = max(best, store.read_manifest(checkpoint).step)
    return best


def _kill_once(spec: JobSpec, root: Path, progress: Path, rng: random.Random) -> int:
    """Start the job, SIGKILL it at a random moment once it trains; steps lost."""
    progress.write_bytes(b"\0" * 8)
    child = subprocess.Popen([sys.executable, "-c", CHILD, spec.model_dump_json(), str(root)],
                             cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while int.from_bytes(progress.read_bytes()[:8], "little") < 50:
            if child.poll() is not None:
                raise RuntimeError(f"{spec.name} ended before it was killed")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    killed_at = int.from_bytes(progress.read_bytes()[:8], "little")
    return killed_at - _newest_committed_step(root, spec.name)


#: the kill benchmark's jobs: the digits CNN (~3 ms steps: Python's fixed cost per save,
#: ~1-2 ms, is most of a save) and the same CNN 8x wider (~30 ms steps, as small models
#: take on a GPU), where that cost is small against a step
KILL_JOBS: dict[str, dict[str, Any]] = {"": {}, ", 30 ms steps": {"width": 128}}


def work_lost(config: Config, scratch: Path) -> list[Row]:
    """Steps (and seconds) lost to a SIGKILL at a random moment, per policy and job."""
    rng = random.Random(0)
    progress = scratch / "progress"
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, params in KILL_JOBS.items():
        step_s = statistics.median(_per_step(jobs.digits(jobs.BareRun(params, 3))))
        lost: dict[str, list[int]] = {name: [] for name in POLICIES}
        for trial in range(config.kills):
            for name, policy in POLICIES.items():
                spec = _spec(f"kill{params.get('width', '')}-{name}-{trial}", DIGITS, 1000,
                             checkpoint=policy,
                             params={**params, "progress_file": str(progress)})
                lost[name].append(_kill_once(spec, scratch / "root", progress, rng))
        means = {name: statistics.mean(values) for name, values in lost.items()}
        for name, values in lost.items():
            target, meets = "", None
            if name == "adaptive_2pct":
                target, meets = "<= 1/5 every_25", means[name] <= means["every_25"] / 5
            rows.append(Row(f"steps lost per kill, {name}{label}", means[name], "steps",
                            "every_25", means["every_25"], target=target, meets=meets,
                            samples=[float(v) for v in values],
                            detail={"seconds_lost_mean": means[name] * step_s,
                                    "bare_step_s": step_s}))
    return rows


# -- 5. copy to the root ---------------------------------------------------------------

def _cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def upload(config: Config, scratch: Path) -> list[Row]:
    """Throughput of a checkpoint's copy to the root against a plain file copy + fsync:
    as the saver uploads what its writer just wrote (hashed as it was written, not read
    again), and as it uploads a checkpoint an earlier process left (checked as it is
    copied); with the CPU each one costs."""
    state = _mlp_state(config)
    local = CheckpointStore(scratch / "local", Storage())
    root = CheckpointStore(scratch / "root", Storage())
    manifest = local.commit(state, step=1, epoch=0, batch=0, generation=1,
                            created_at=time.time(), meta={})
    del state
    source = local.dir / manifest.name / "state.pt"
    size = source.stat().st_size

    def plain() -> None:
        target = scratch / "plain.pt"
        shutil.copyfile(source, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())

    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}

    def ours_once(verify: bool) -> None:
        started, cpu = time.perf_counter(), _cpu_s()
        copied = root.upload_from(local, manifest.name, verify_source=verify)
        walls[verify].append(time.perf_counter() - started)
        cpus[verify].append(_cpu_s() - cpu)
        root.discard(copied.name)  # not timed

    # this VM's disk slows down for seconds at a time, and a copy pays for some of the
    # one before it (reclaiming its pages): every order of the three, once each
    theirs: list[float] = []
    kinds: list[Callable[[], None]] = [lambda: theirs.extend(_timed(plain, 1)),
                                       lambda: ours_once(False), lambda: ours_once(True)]
    orders = list(itertools.permutations(kinds))
    for order in orders[:2 * config.reps] or orders[:1]:
        for copy_once in order:
            copy_once()
    plain_bps = size / statistics.median(theirs)
    rows = []
    for verify, label in ((False, "just written"), (True, "left by an earlier process")):
        ours_bps = size / statistics.median(walls[verify])
        rows.append(Row(f"copy to root, {label}", ours_bps, "B/s", "plain copy", plain_bps,
                        target=">= 0.8 x plain", meets=ours_bps >= 0.8 * plain_bps,
                        samples=[size / s for s in walls[verify]],
                        detail={"bytes": size, "plain_samples": [size / s for s in theirs],
                                "cpu_s_per_gb": statistics.median(cpus[verify]) / size * 1e9,
                                "source_checked": verify}))
    return rows


CASES: dict[str, Callable[[Config, Path], list[Row]]] = {
    "step_ratio": step_ratio,
    "stall": stall,
    "big_save": big_save,
    "resume": resume,
    "work_lost": work_lost,
    "upload": upload,
    "runtime_death": runtime_death,
    "soak": soak_case,
    "reseed": reseed_case,
    "ddp": ddp_case,
}
