"""The training functions the benchmarks time, under colabrun and bare.

Each one takes a run handle. :class:`BareRun` is the reference: the same
methods with nothing behind them, so the bare loop runs the very same code.
Timings come back in the function's return value; ``progress_file`` (a param)
gets the global step after every step, for the kill benchmark.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from colabrun.jobs.examples.digits import DigitsCNN, load_digits_tensors
from colabrun.runner.train.handle import Run, save_telemetry
from colabrun.runner.train.saving import SaveTelemetry

FIRST_STEP_ENV = "BENCH_FIRST_STEP_FILE"


class BareRun:
    """A run handle that only loops: the reference for step-time ratios."""

    def __init__(self, params: dict[str, Any], epochs: int) -> None:
        self.params = params
        self.global_step = 0
        self.extras: dict[str, Any] = {}
        self._epochs = epochs

    def track(self, **objects: Any) -> None:
        return None

    def epochs(self) -> Iterator[int]:
        yield from range(self._epochs)

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        yield from loader

    def step(self, **metrics: float) -> None:
        self.global_step += 1


class _Progress:
    """Writes the global step to a file after each step (one ``pwrite``)."""

    def __init__(self, path: str | None) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT) if path else None

    def mark(self, step: int) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, struct.pack("q", step), 0)


def _telemetry(run: Any) -> SaveTelemetry | None:
    """What saves cost a colabrun run (read beside its handle); ``None`` for a bare one."""
    return save_telemetry(run) if isinstance(run, Run) else None


def _first_step_file(params: Any) -> None:
    """For the resume benchmark: note when the first step starts, then end the process.

    The file is named by the environment (``BENCH_FIRST_STEP_FILE``), not a param:
    params are part of a job's identity, and a resumed job must keep them.
    """
    path = os.environ.get(FIRST_STEP_ENV)
    if path:
        with open(path, "w") as f:
            f.write(repr(time.time()))
        os._exit(0)


def digits(run: Any) -> dict[str, Any]:
    """The digits CNN (SGD with momentum, a schedule), timed per epoch; param ``width``
    (16) sets its size."""
    torch.set_num_threads(1)
    params = run.params
    train_set, _ = load_digits_tensors()
    loader = DataLoader(train_set, batch_size=32, shuffle=True)
    model = DigitsCNN(width=int(params.get("width", 16)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)
    loss_fn = nn.CrossEntropyLoss()
    progress = _Progress(params.get("progress_file"))
    epoch_s: list[float] = []
    steps: list[int] = []
    telemetry = _telemetry(run)
    stalls = telemetry.stalls if telemetry is not None else []
    saves_at: list[int] = []  # saves taken before each epoch's end mark
    charged_at: list[float] = []  # what the meters charged to saves and uploads by then
    mark, step0 = time.perf_counter(), run.global_step
    for _ in run.epochs():
        for images, labels in run.batches(loader):
            _first_step_file(params)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            run.step(loss=loss.item())
            progress.mark(run.global_step)
        scheduler.step()
        now = time.perf_counter()  # epoch to epoch: includes the epoch-end save
        epoch_s.append(now - mark)
        saves_at.append(len(stalls))
        charged_at.append(telemetry.charged_s if telemetry is not None else 0.0)
        steps.append(run.global_step - step0)
        mark, step0 = now, run.global_step
    return {"epoch_s": epoch_s, "steps": steps, "stalls": list(stalls), "saves_at": saves_at,
            "toll_s": telemetry.cost.toll_s if telemetry is not None else None,
            "charged_at": charged_at}


class BigMLP(nn.Module):
    """Four 4096x4096 layers: 67 M parameters; with Adam's two moments ~0.8 GB of state."""

    def __init__(self, width: int = 4096, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


def big_mlp(run: Any) -> dict[str, Any]:
    """Adam on :class:`BigMLP`; records every step's time and each save's stall."""
    torch.set_num_threads(int(run.params.get("threads", 2)))
    width, layers = int(run.params.get("width", 4096)), int(run.params.get("layers", 4))
    model = BigMLP(width, layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    run.track(model=model, optimizer=optimizer)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, width, generator=generator) for _ in range(
        int(run.params.get("steps", 12)))]
    plain_save = _plain_saver(run.params, model, optimizer)
    every = int(run.params.get("plain_every", 0))
    step_s: list[float] = []
    memory_before = 0
    telemetry = _telemetry(run)
    writes = _Writes(telemetry)
    loop_started = time.perf_counter()
    for _ in run.epochs():
        for x in run.batches(batches):
            _first_step_file(run.params)
            started = time.perf_counter()
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
            run.step()
            if plain_save is not None and run.global_step % every == 0:
                plain_save(run.global_step)
            step_s.append(time.perf_counter() - started)
            writes.look()
            if len(step_s) == 1:  # the training state is all allocated; no save yet
                memory_before = pss(os.getpid())
    loop_s = time.perf_counter() - loop_started
    write = telemetry.last_write if telemetry is not None else None
    return {"step_s": step_s, "stalls": list(telemetry.stalls) if telemetry is not None else [],
            "memory_before_first_save": memory_before, "trained_until": time.monotonic(),
            "last_write": vars(write) if write is not None else None, "loop_s": loop_s,
            "write_s": writes.write_s}


class _Writes:
    """The duration of each background write (snapshot handed over to local commit) seen
    after a step: how long a save takes to become durable locally."""

    def __init__(self, telemetry: SaveTelemetry | None) -> None:
        self._telemetry = telemetry
        self._last: Any = None
        self.write_s: list[float] = []

    def look(self) -> None:
        write = self._telemetry.last_write if self._telemetry is not None else None
        if write is not None and write is not self._last:
            self._last = write
            self.write_s.append(write.write_s)


def sync_save(state: Any, path: str | os.PathLike[str]) -> None:
    """The plain reference save: ``torch.save``, then fsync."""
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _plain_saver(params: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
                 ) -> Any:
    """For the big-save reference runs of a bare loop: a synchronous save every
    ``plain_every`` steps into ``plain_dir``, by ``plain_with``: ``torch`` (``torch.save``
    of model and optimizer, then fsync) or ``accelerate`` (``Accelerator.save_state``,
    as its docs show; only where accelerate is installed)."""
    how, folder = params.get("plain_with"), params.get("plain_dir")
    if how is None or folder is None:
        return None
    if how == "torch":
        def save(step: int) -> None:
            sync_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "step": step}, os.path.join(folder, "state.pt"))
        return save
    from accelerate import Accelerator  # an optional peer, for this reference only

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(model, optimizer)  # on one CPU process: registers them, wraps nothing

    def save_state(step: int) -> None:
        accelerator.save_state(os.path.join(folder, "accelerate"))
    return save_state


def pss(pid: int) -> int:
    """Proportional set size of a process in bytes (pages shared with a fork count once)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
