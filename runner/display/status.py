"""The periodic status line: progress, speed, ETA, time left on this runtime."""

from __future__ import annotations

from colabrun.runner.commands.report import human_age
from colabrun.runner.train.live import LiveProgress
from colabrun.runner.watch.deadline import Deadline


def status_line(p: LiveProgress, *, deadline: Deadline, now: float) -> str:
    """``epoch 3/8, step 1234 (batch 12/45), 35.2 steps/s, ETA 3m, runtime left 11h02m,
    saved step-1200 (local); durable: step-1100, 40s ago``."""
    parts = [f"epoch {p.epoch + 1}/{p.epochs_total}", f"step {p.step}"]
    if p.batches_in_epoch:
        parts[-1] += f" (batch {p.batch}/{p.batches_in_epoch})"
    if p.step_s:
        parts.append(f"{1 / p.step_s:.1f} steps/s")
        if p.batches_in_epoch:
            left = (p.epochs_total - p.epoch) * p.batches_in_epoch - p.batch
            parts.append(f"ETA {human_age(left * p.step_s)}")
    left_s = deadline.time_left(now)
    parts.append("no runtime limit" if left_s is None else f"runtime left {human_age(left_s)}")
    if p.saved.newest_step is not None:
        parts.append(p.saved.describe(now=now))
    if p.micro_batches > 1:
        parts.append(f"{p.micro_batches} micro-batches per batch (after CUDA OOM)")
    return ", ".join(parts)
