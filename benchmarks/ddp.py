"""The ``ddp`` case: a job of 2 ranks in 2 worker processes (DDP over gloo, on the CPU).

1. **metered overhead**: a small MLP (256-512-512-512-10, Adam, batches of 128 per rank,
   one thread per process: ~15-25 ms steps here) trained by colabrun in 2 processes,
   under its default checkpoint policy (the adaptive cadence at ``max_overhead: 0.02``,
   epoch-end saves, every 300 s), against a bare DDP loop of the same model, data, batch
   size and steps (2 processes started here, ``init_process_group`` over gloo, DDP, a
   ``DistributedSampler``; no colabrun). Two epochs of 200 steps, each timed on rank 0
   (epoch end to epoch end, so the save at the first epoch's end counts in the second);
   the first is warm-up (the cadence's first saves, the writer's start). Repetitions of
   one run of each, in a random order (this 2-core VM's speed drifts over seconds): the
   step ratio is the median of each repetition's ratio. Beside it, what colabrun's saves
   and uploads cost by its own meters (the leader's ``save_telemetry(run).charged_s`` over
   the timed epoch, as :func:`~benchmarks.cases.step_ratio` reads it; split into stalls,
   saves' tolls and uploads' tolls in the JSON): target at most 2%. The epochs are short
   (~4 s): the epoch-end save, outside the adaptive budget, weighs more than in a real
   job (with 80-step epochs the figure was 2.4-3%).
2. **rank death to restart**: a 2-process run whose process 1 is SIGKILLed at a known
   step (``COLABRUN_KILL_AT=step:N``, ``COLABRUN_KILL_PROCESS=1``), timed from the kill
   (the kill log's time) to the end of the restarted group's first step on the leader,
   and split: the supervisor's detection and killing of the survivor (to its "restarting"
   line), the new processes' start (the kernel's start time: to 10 ms), their imports,
   the rendezvous and session set-up, the job's own set-up, the checkpoint's load, DDP's
   wrap (a broadcast) and the first step. These are process kills within one runtime
   (the supervisor lives on), not runtime deaths (``runtime_death``). No target.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch._inductor.config  # noqa: F401 - see IMPORTED_AT
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: when this module was imported: in a worker, the end of its imports (the entrypoint is
#: imported just before the group's rendezvous). ``torch._inductor.config`` is imported
#: above, as the session's ``torch.use_deterministic_algorithms`` (and DDP's constructor, in
#: a bare loop) would import it lazily (~1.2 s here: sympy, torch._dynamo...), so that the
#: imports phase holds every import and the next one only the rendezvous and set-up.
IMPORTED_AT = time.time()

if TYPE_CHECKING:
    from benchmarks.cases import Config, Row

ENTRYPOINT = "benchmarks.ddp:train"
LOCALHOST = "127.0.0.1"
BATCH = 128  # per rank
RANKS = 2


def _sizes(config: Config) -> dict[str, int]:
    """Steps per epoch and epochs of the timed runs (the first epoch is warm-up), and of
    the killed ones, killed at step ``kill_at`` (mid-epoch)."""
    if config.quick_mode:
        return {"steps": 10, "epochs": 2, "kill_steps": 10, "kill_epochs": 2, "kill_at": 15}
    return {"steps": 200, "epochs": 2, "kill_steps": 40, "kill_epochs": 2, "kill_at": 50}


# -- the job, under colabrun and bare --------------------------------------------------


def _dataset(steps: int) -> TensorDataset:
    """``steps * BATCH * RANKS`` random samples of 256 features, 10 classes."""
    generator = torch.Generator().manual_seed(0)
    size = steps * BATCH * RANKS
    return TensorDataset(torch.randn(size, 256, generator=generator),
                         torch.randint(0, 10, (size,), generator=generator))


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def _step(net: nn.Module, optimizer: torch.optim.Optimizer,
          pieces: Iterable[tuple[Any, float]]) -> float:
    """One optimizer step over a batch's pieces (``run.split``'s, or the batch whole)."""
    optimizer.zero_grad()
    total = 0.0
    for (x, y), weight in pieces:
        loss = nn.functional.cross_entropy(net(x), y)
        torch.autograd.backward(loss * weight)
        total += loss.item() * weight
    optimizer.step()
    return total


class _Epochs:
    """Each epoch's time (epoch end to epoch end) and steps, and what the meters charged
    to saves by then (the leader's :class:`SaveTelemetry`; none in a bare loop): in all,
    and as stalls, saves' tolls and uploads' tolls; and the saves taken by then."""

    def __init__(self, telemetry: Any = None) -> None:
        self.telemetry = telemetry
        self.epoch_s: list[float] = []
        self.steps: list[int] = []
        self.charged_at: list[float] = []
        self.parts_at: list[tuple[float, float, float]] = []
        self.saves_at: list[int] = []
        self.cpu_s: list[float] = []  # this process's CPU time (all its threads)
        self._mark, self._cpu = time.perf_counter(), time.process_time()
        self._count = 0

    def step(self) -> None:
        self._count += 1

    def end(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.epoch_s.append(now - self._mark)
        self.cpu_s.append(cpu - self._cpu)
        self._cpu = cpu
        self.steps.append(self._count)
        meters = self.telemetry
        self.charged_at.append(meters.charged_s if meters is not None else 0.0)
        self.parts_at.append((sum(meters.stalls), meters.cost.tolls_s,
                              meters.saver.uploader.pace.toll_s) if meters is not None
                             else (0.0, 0.0, 0.0))
        self.saves_at.append(len(meters.stalls) if meters is not None else 0)
        self._mark, self._count = now, 0

    def result(self) -> dict[str, Any]:
        stalls = list(self.telemetry.stalls) if self.telemetry is not None else []
        return {"epoch_s": self.epoch_s, "steps": self.steps, "charged_at": self.charged_at,
                "parts_at": self.parts_at, "saves_at": self.saves_at, "stalls": stalls,
                "cpu_s": self.cpu_s}


def process_started_at() -> float:
    """The wall time this process started, from ``/proc`` (10 ms resolution)."""
    with open("/proc/self/stat") as f:
        started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


def train(run: Any) -> dict[str, Any]:
    """The job under colabrun: :func:`_step` over ``run.split``'s pieces of each batch.
    Param ``marks`` (a file): each process appends when its set-up phases and its first
    step ended (JSON lines), for the restart figures."""
    marks: dict[str, Any] = {"enter": time.time(), "imported": IMPORTED_AT,
                             "process_start": process_started_at()}
    torch.set_num_threads(1)
    loader = DataLoader(_dataset(int(run.params["steps"])), batch_size=BATCH, shuffle=True)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    marks["built"] = time.time()
    run.track(model=model, optimizer=optimizer)
    marks["tracked"] = time.time()
    net = run.wrap(model)
    marks["wrapped"] = time.time()
    epochs = _Epochs(_telemetry(run) if run.is_main else None)
    for _ in run.epochs():
        for batch in run.batches(loader):
            _step(net, optimizer, run.split(batch))
            run.step()
            epochs.step()
            if "first_step" not in marks:
                marks["first_step"] = time.time()
                _write_marks(run, marks)
        epochs.end()
    return epochs.result()


def _telemetry(run: Any) -> Any:
    from colabrun.runner.train.handle import save_telemetry

    return save_telemetry(run)


def _write_marks(run: Any, marks: dict[str, Any]) -> None:
    path = run.params.get("marks")
    if path:
        line = {**marks, "process": run.rank, "pid": os.getpid(), "resumed": run.resumed,
                "step": run.global_step}
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def bare_main() -> None:
    """One process of the bare DDP loop: ``python -c "from benchmarks.ddp import bare_main;
    bare_main()" ARGS_JSON`` (``rank``, ``port``, ``steps``, ``epochs``, ``out``: where
    rank 0 writes its epochs' times)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    args = json.loads(sys.argv[1])
    rank = int(args["rank"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{LOCALHOST}:{args['port']}",
                            rank=rank, world_size=RANKS, timeout=timedelta(seconds=120))
    dataset = _dataset(int(args["steps"]))
    sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=RANKS,
                                                          rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler)
    torch.manual_seed(0)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = DistributedDataParallel(model)
    epochs = _Epochs()
    for epoch in range(int(args["epochs"])):
        sampler.set_epoch(epoch)
        for x, y in loader:
            _step(net, optimizer, [((x, y), 1.0)])
            epochs.step()
        epochs.end()
    if rank == 0:
        Path(args["out"]).write_text(json.dumps(epochs.result()))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _bare_run(folder: Path, steps: int, epochs: int) -> dict[str, Any]:
    """The bare DDP loop in 2 processes started here; rank 0's epochs."""
    folder.mkdir(parents=True, exist_ok=True)
    out, port = folder / "bare.json", _free_port()
    children = [subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.ddp import bare_main; bare_main()",
         json.dumps({"rank": rank, "port": port, "steps": steps, "epochs": epochs,
                     "out": str(out)})], cwd=Path(__file__).resolve().parent.parent)
        for rank in range(RANKS)]
    try:
        codes = [child.wait(timeout=600) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert codes == [0] * RANKS, f"bare DDP processes exited with {codes}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


class _Stamped(io.StringIO):
    """A console's output that keeps when each piece was written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.time(), text))
        return super().write(text)

    def first(self, needle: str) -> float:
        """When the first piece holding ``needle`` was written."""
        found = [at for at, text in self.writes if needle in text]
        assert found, f"the console never said {needle!r}:\n{self.getvalue()[-4000:]}"
        return found[0]


def _colabrun_run(folder: Path, name: str, steps: int, epochs: int, **params: Any
                  ) -> tuple[Any, _Stamped]:
    """The job in 2 supervised processes under the default checkpoint policy, in this
    process's supervisor; the leader's return value, and what the console said, stamped."""
    from colabrun.jobs.spec import JobSpec
    from colabrun.runner.api import run as run_job
    from colabrun.runner.display.console import Console

    spec = JobSpec.model_validate({
        "name": name, "entrypoint": ENTRYPOINT, "epochs": epochs, "platform": "local",
        "supervise": True, "distributed": {"ranks": RANKS, "processes": RANKS},
        "local_dir": str(folder / "local"), "params": {"steps": steps, **params}})
    out = _Stamped()
    result = run_job(spec, root=folder / "root", progress=False, console=Console(out=out))
    assert result.status == "completed", (name, result.status, result.reason,
                                          out.getvalue()[-4000:])
    return result.value, out


def _per_step(result: dict[str, Any], key: str = "epoch_s") -> list[float]:
    """Seconds per step of every epoch but the first (warm-up); ``key="cpu_s"``: CPU
    seconds of rank 0's process per step."""
    return [s / n for s, n in zip(result[key][1:], result["steps"][1:], strict=True) if n]


def _meters(result: dict[str, Any]) -> dict[str, Any]:
    """What the leader's meters charged over the epochs timed (all but the first), as
    shares of their time: stalls, saves' tolls, uploads' tolls; and the saves in them."""
    train_s = sum(result["epoch_s"][1:])
    first, last = result["parts_at"][0], result["parts_at"][-1]
    shares = [(b - a) / train_s for a, b in zip(first, last, strict=True)]
    return {"stall_share": shares[0], "save_toll_share": shares[1],
            "upload_toll_share": shares[2],
            "whole_run_share": result["charged_at"][-1] / sum(result["epoch_s"]),
            "saves_timed": result["saves_at"][-1] - result["saves_at"][0],
            "saves": len(result["stalls"]),
            "stall_median_s": statistics.median(result["stalls"]) if result["stalls"] else None}


def overhead(config: Config, scratch: Path) -> list[Row]:
    """Step time of the 2-process job under colabrun (the default policy) against the bare
    DDP loop, and colabrun's metered checkpointing overhead (module docstring, 1)."""
    from benchmarks.cases import Row, _metered_overhead, bootstrap_median

    sizes = _sizes(config)
    steps, epochs = sizes["steps"], sizes["epochs"]
    rng = random.Random(0)
    runs: dict[str, list[list[float]]] = {"bare": [], "colabrun": []}
    cpu: dict[str, list[float]] = {"bare": [], "colabrun": []}
    metered: list[float] = []
    meters: list[dict[str, Any]] = []
    for rep in range(config.reps):
        order = ["bare", "colabrun"]
        rng.shuffle(order)
        for mode in order:
            if mode == "bare":
                value = _bare_run(scratch / f"bare-{rep}", steps, epochs)
            else:
                value, _ = _colabrun_run(scratch / f"run-{rep}", f"ddp-{rep}", steps, epochs)
                metered.append(_metered_overhead(value))
                meters.append(_meters(value))
            runs[mode].append(_per_step(value))
            cpu[mode].append(statistics.median(_per_step(value, "cpu_s")))
    pooled = {mode: [x for run in per_run for x in run] for mode, per_run in runs.items()}
    bare_s = statistics.median(pooled["bare"])
    ratios = [statistics.median(ours) / statistics.median(bare)
              for ours, bare in zip(runs["colabrun"], runs["bare"], strict=True)]
    ratio = statistics.median(ratios)
    share = statistics.median(metered)
    return [
        Row("DDP step, bare loop, 2 procs", bare_s, "s", samples=pooled["bare"],
            detail={"steps_per_epoch": steps, "epochs": epochs, "batch_per_rank": BATCH,
                    "ranks": RANKS, "processes": RANKS}),
        Row("DDP step, colabrun, 2 procs", bare_s * ratio, "s", "bare", bare_s,
            samples=pooled["colabrun"],
            detail={"paired_ratios": ratios,
                    "paired_ratio_interval_90": bootstrap_median(ratios, rng),
                    "pooled_ratio": statistics.median(pooled["colabrun"]) / bare_s,
                    # CPU time of rank 0's process per step: less blurred by other load
                    "cpu_per_step_s": cpu["colabrun"], "bare_cpu_per_step_s": cpu["bare"],
                    "cpu_ratio": statistics.median(
                        [c / b for c, b in zip(cpu["colabrun"], cpu["bare"], strict=True)])}),
        Row("DDP metered overhead, 2 procs", 100 * share, "%", target="<= 2%",
            meets=share <= 0.02, samples=[100 * m for m in metered],
            detail={"policy": "default: adaptive (max_overhead 0.02), epoch ends, 300 s",
                    "per_run": meters}),
    ]


# -- 2. a rank's death, to the group's first step after the restart ------------------------

#: the phases of a restart, each from the mark before it (the kill's time first)
PHASES = [
    ("detected", "  detect, kill the survivor"),
    ("process_start", "  start the processes"),
    ("imported", "  imports"),
    ("enter", "  rendezvous, session set-up"),
    ("built", "  the job's own set-up"),
    ("tracked", "  checkpoint load"),
    ("wrapped", "  DDP wrap"),
    ("first_step", "  first step"),
]


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set (the workers inherit it), put back after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _killed_once(folder: Path, name: str, sizes: dict[str, int]) -> dict[str, Any]:
    """One run whose process 1 is SIGKILLed at step ``kill_at``: the restart's marks."""
    folder.mkdir(parents=True, exist_ok=True)
    marks_file, kill_log = folder / "marks.jsonl", folder / "kills.jsonl"
    with _environment(COLABRUN_KILL_AT=f"step:{sizes['kill_at']}", COLABRUN_KILL_PROCESS="1",
                      COLABRUN_KILL_LOG=str(kill_log)):
        _, out = _colabrun_run(folder, name, sizes["kill_steps"], sizes["kill_epochs"],
                               marks=str(marks_file))
    kill = json.loads(kill_log.read_text().splitlines()[0])
    marks = [json.loads(line) for line in marks_file.read_text().splitlines()]
    fresh = next(m for m in marks if m["process"] == 0 and not m["resumed"])
    resumed = next(m for m in marks if m["process"] == 0 and m["resumed"])
    follower = next((m for m in marks if m["process"] == 1 and m["resumed"]), None)
    times = {"kill": kill["time"], "detected": out.first("restarting"), **resumed}
    phases = {key: times[key] - times[before] for (key, _), before in
              zip(PHASES, ["kill"] + [key for key, _ in PHASES[:-1]], strict=True)}
    return {"total": resumed["first_step"] - kill["time"], "phases": phases,
            "fresh_start": fresh["first_step"] - fresh["process_start"],
            "killed_at_step": kill["step"], "resumed_first_step": resumed["step"],
            "follower_first_step_lag": None if follower is None
            else follower["first_step"] - resumed["first_step"]}


def restart(config: Config, scratch: Path) -> list[Row]:
    """A rank's SIGKILL to the restarted group's first step, split (module docstring, 2)."""
    from benchmarks.cases import Row

    sizes = _sizes(config)
    trials = [_killed_once(scratch / f"kill-{rep}", f"ddp-kill-{rep}", sizes)
              for rep in range(config.reps)]
    totals = [t["total"] for t in trials]
    fresh = statistics.median(t["fresh_start"] for t in trials)
    rows = [Row("rank death to group's 1st step", statistics.median(totals), "s",
                "fresh start", fresh, samples=totals,
                detail={"trials": trials, "note": "process kills within one runtime"})]
    for key, label in PHASES:
        samples = [t["phases"][key] for t in trials]
        rows.append(Row(label, statistics.median(samples), "s", samples=samples))
    return rows


def ddp_case(config: Config, scratch: Path) -> list[Row]:
    """The ``ddp`` case: :func:`overhead`, then :func:`restart`."""
    return overhead(config, scratch) + restart(config, scratch)
