"""The ``reseed`` case: what seeding each batch's random draws costs (runner/train/batch_seed.py).

colabrun's rebuilt loader reseeds Python's ``random``, NumPy's and torch's global
generators before each batch, so random augmentation repeats exactly after a
resume whatever the worker count; in the training process (``num_workers=0``)
it also saves and puts back the loop's own streams around the batch.

1. **per sample**: that cost per batch divided by the batch size (32, the CIFAR
   example's), in a worker and in the training process, against a CIFAR-like
   augmentation's time per sample (uint8 HWC to a float tensor, pad 4 and random
   crop 32, random flip, normalise, in torch ops); target: at most 2% of it.
   Beside them, for the choice: reseeding per sample instead of per batch, and
   the training process's save and restore through NumPy's ``get_state``/
   ``set_state`` instead of copying the words as one block.
2. **step time**: a small CNN trained on CIFAR-like generated images with that
   augmentation and ``num_workers=2``, an epoch through colabrun's rebuilt loader
   against the same plain ``DataLoader``, in pairs in a random order (this 2-core
   VM's speed drifts over seconds); the figure is the median of the pairs' ratios,
   with a 90% bootstrap interval.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from colabrun.jobs.examples.cifar10 import Cifar10Net
from colabrun.runner.train.batch_seed import batch_seeds
from colabrun.runner.train.data import remaining_batches
from colabrun.runner.train.streams import restore_streams, save_streams, seed_streams

if TYPE_CHECKING:
    from benchmarks.cases import Config, Row

BATCH = 32  # the CIFAR example's batch size
PAD = 4
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


def augment(image: torch.Tensor) -> torch.Tensor:
    """A CIFAR training image's usual augmentation: uint8 ``(H, W, C)`` in, a normalised float
    ``(C, H, W)`` out, padded by 4, cropped back at a random place, flipped half the time."""
    side = image.shape[0]
    chw = image.permute(2, 0, 1).float().div_(255.0)
    padded = nn.functional.pad(chw, (PAD, PAD, PAD, PAD))
    top, left = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
    crop = padded[:, top:top + side, left:left + side]
    if bool(torch.rand(()) < 0.5):
        crop = crop.flip(-1)
    return (crop - MEAN) / STD


class CifarLike(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``size`` random 32x32 RGB uint8 images with labels, augmented when indexed."""

    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (size, 32, 32, 3), dtype=torch.uint8,
                                    generator=generator)
        self.labels = torch.randint(0, 10, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(self.images[index]), self.labels[index]


def _per_call_us(fn: Callable[[int], Any], calls: int, reps: int) -> list[float]:
    """Microseconds per call of ``fn(i)``, one figure per repetition of ``calls`` calls."""
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        out.append((time.perf_counter() - started) / calls * 1e6)
    return out


def _in_worker(number: int) -> None:
    seed_streams(batch_seeds(12_345, number))


def _in_training_process(number: int, *, fast: bool = True) -> None:
    saved = save_streams() if fast else save_streams(locate=lambda: None)
    seed_streams(batch_seeds(12_345, number))
    restore_streams(saved)


def per_sample(config: Config) -> list[Row]:
    """Reseeding's cost per sample (per batch / :data:`BATCH`) against the augmentation's,
    each repetition timing the augmentation and then every design, so that each ratio
    pairs figures taken seconds apart (this VM's speed drifts by more than 2%)."""
    from benchmarks.cases import Row

    calls, reps = (200, 3) if config.quick_mode else (2000, 5 * config.reps)
    image = CifarLike(1).images[0]
    designs: dict[str, tuple[Callable[[int], Any], int]] = {
        "reseed/sample, worker": (_in_worker, BATCH),
        "reseed/sample, num_workers=0": (_in_training_process, BATCH),
        "  per-sample reseeding instead": (_in_worker, 1),
        "  num_workers=0 via get_state": (lambda n: _in_training_process(n, fast=False), BATCH),
    }
    augment_us: list[float] = []
    per_design: dict[str, list[float]] = {name: [] for name in designs}
    for _ in range(reps):
        augment_us.extend(_per_call_us(lambda _: augment(image), calls, 1))
        for name, (fn, batch) in designs.items():
            per_design[name].extend(us / batch for us in _per_call_us(fn, calls, 1))
    reference = statistics.median(augment_us)
    rows = [Row("CIFAR augment, per sample", reference, "µs", samples=augment_us)]
    for name, samples in per_design.items():
        ratios = [us / ref for us, ref in zip(samples, augment_us, strict=True)]
        ratio = statistics.median(ratios)
        held = not name.startswith(" ")  # the two lines below are the designs not taken
        rows.append(Row(name, reference * ratio, "µs", "augment", reference,
                        target="<= 0.02 x" if held else "", meets=ratio <= 0.02 if held else None,
                        samples=samples, detail={
                            "batch_size": designs[name][1], "paired_ratios": ratios,
                            "per_batch_us": statistics.median(samples) * designs[name][1]}))
    return rows


def _epoch_s(batches: Iterable[Any], model: nn.Module, optimizer: torch.optim.Optimizer
             ) -> tuple[float, int]:
    started, steps = time.perf_counter(), 0
    for images, labels in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        steps += 1
    return time.perf_counter() - started, steps


def step_time(config: Config) -> list[Row]:
    """Time per step with ``num_workers=2``: colabrun's rebuilt loader against the plain one."""
    from benchmarks.cases import Row, bootstrap_median

    torch.set_num_threads(1)
    size, pairs = (256, 1) if config.quick_mode else (1024, 5 * config.reps)
    loader = DataLoader(CifarLike(size), batch_size=BATCH, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    model = Cifar10Net(width=16, hidden=128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = random.Random(0)
    per_step: dict[str, list[float]] = {"plain": [], "colabrun": []}
    for epoch in range(pairs):
        order = ["plain", "colabrun"]
        rng.shuffle(order)
        for mode in order:
            batches = loader if mode == "plain" else remaining_batches(
                loader, seed=0, epoch=epoch, skip=0)
            seconds, steps = _epoch_s(batches, model, optimizer)
            per_step[mode].append(seconds / steps)
    ratios = [ours / plain for ours, plain in
              zip(per_step["colabrun"], per_step["plain"], strict=True)]
    plain_s = statistics.median(per_step["plain"])
    ratio = statistics.median(ratios)
    return [Row("CNN step, plain loader, 2 workers", plain_s, "s", samples=per_step["plain"]),
            Row("CNN step, colabrun's loader", plain_s * ratio, "s", "plain", plain_s,
                target="ratio <= 1.02", meets=ratio <= 1.02, samples=per_step["colabrun"],
                detail={"paired_ratios": ratios,
                        "paired_ratio_interval_90": bootstrap_median(ratios, rng),
                        "images": size, "batch_size": BATCH})]


def reseed_case(config: Config, scratch: Path) -> list[Row]:
    """The ``reseed`` case: :func:`per_sample`, then :func:`step_time` (no files)."""
    return per_sample(config) + step_time(config)
