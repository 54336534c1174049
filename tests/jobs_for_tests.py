"""Small training functions for the supervisor's real-process tests.

``slow_train`` takes ``params["sleep_s"]`` per step (so tests can time a stop,
a deadline or a hang), can hang once at a step (``hang_at``, remembered by a
marker file so the restarted worker does not hang again), and can raise a CUDA
OOM whenever a micro-batch has more than ``oom_above`` rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


def slow_train(run: Any) -> float:
    params = run.params
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 4, generator=generator),
                         torch.randn(64, 1, generator=generator))
    loader = DataLoader(data, batch_size=int(params.get("batch_size", 8)), shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1),
                                torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    run.track(model=model, optimizer=optimizer)
    for _ in run.epochs():
        for batch in run.batches(loader):
            _maybe_hang(run, params)
            optimizer.zero_grad()
            for (x, y), weight in run.split(batch):
                oom_above = params.get("oom_above")
                if oom_above is not None and len(x) > int(oom_above):
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
                (torch.nn.functional.mse_loss(model(x), y) * weight).backward()
            optimizer.step()
            time.sleep(float(params.get("sleep_s", 0.0)))
            run.step()
    return float(model[0].weight.sum())


def _maybe_hang(run: Any, params: Any) -> None:
    hang_at = params.get("hang_at")
    if hang_at is None or run.global_step != int(hang_at):
        return
    marker = Path(str(params["marker_dir"])) / "hung-once"
    if marker.exists():
        return
    marker.write_text("hung\n")
    while True:  # a dataloader deadlock, say: alive, no progress
        time.sleep(3600)
