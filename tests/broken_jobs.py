"""Training functions that break the resume contract, for ``colabrun chaos`` to catch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def _setup(run: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, DataLoader[Any]]:
    generator = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(48, 4, generator=generator),
                         torch.randn(48, 1, generator=generator))
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return model, optimizer, DataLoader(data, batch_size=8, shuffle=True)


def untracked_scheduler(run: Any) -> None:
    """The scheduler is not passed to run.track: its epoch counter restarts on resume.

    (A StepLR with step_size=1 would hide the bug: it decays the learning rate it
    finds in the optimizer, which is tracked. LambdaLR computes from its counter.)
    """
    model, optimizer, loader = _setup(run)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5 ** epoch)
    run.track(model=model, optimizer=optimizer)
    for _ in run.epochs():
        for x, y in run.batches(loader):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            run.step()
        scheduler.step()


def own_generator(run: Any) -> None:
    """Noise from a NumPy generator the handle does not know: it restarts on resume."""
    model, optimizer, loader = _setup(run)
    rng = np.random.default_rng(0)
    run.track(model=model, optimizer=optimizer)
    for _ in run.epochs():
        for x, y in run.batches(loader):
            noise = torch.from_numpy(rng.normal(size=x.shape).astype("float32")) * 0.1
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x + noise), y).backward()
            optimizer.step()
            run.step(loss=0.0)
