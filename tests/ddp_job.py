"""A data-parallel training function: the same code runs 2 ranks in 2 processes (DDP over
gloo) or as 2 virtual ranks in one, and must give the same weights bit for bit.

Random draws happen where each rank has its own stream: in the dataset's augmentation
(seeded per batch) and inside ``run.split``'s pieces (noise, dropout).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class Noisy(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A small regression set whose samples are jittered as they load (an augmentation)."""

    def __init__(self, size: int = 96) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 6, generator=generator)
        self.y = self.x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(size, 1,
                                                                     generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index] + 0.01 * torch.randn(6), self.y[index]


def train(run: Any) -> int:
    loader = DataLoader(Noisy(), batch_size=8, shuffle=True,
                        num_workers=int(run.params.get("workers", 0)))
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Dropout(0.3),
                                torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(run.params.get("lr", 0.01)))
    run.track(model=model, optimizer=optimizer)
    net = run.wrap(model)
    for _epoch in run.epochs():
        for batch in run.batches(loader):
            optimizer.zero_grad()
            total = 0.0
            for (x, y), weight in run.split(batch):
                noise = 0.01 * torch.randn_like(x)
                loss = torch.nn.functional.mse_loss(net(x + noise), y)
                (loss * weight).backward()
                total += loss.item() * weight
            optimizer.step()
            time.sleep(float(run.params.get("step_sleep", 0.0)))  # a slower model
            run.step(loss=total)
    return run.world_size
