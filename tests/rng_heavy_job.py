"""A training function that draws random numbers everywhere the contract allows.

Python's random, NumPy's and torch's global generators are used at the top of
each epoch, inside the batch loop (dropout, noise) and after it (a random
evaluation subset); ``run.extras`` carries a user counter. If any RNG state,
position or extra were restored at the wrong point, the weights would differ.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def train(run: Any) -> float:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(120, 6, generator=generator),
                         torch.randn(120, 1, generator=generator))
    loader = DataLoader(data, batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.2),
                                torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(run.params.get("lr", 0.01)))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)
    run.extras.setdefault("noise_draws", 0)
    for _epoch in run.epochs():
        jitter = random.random() * 1e-3 + float(np.random.rand()) * 1e-3
        for x, y in run.batches(loader):
            noise = torch.randn_like(x) * jitter
            loss = torch.nn.functional.mse_loss(model(x + noise), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.extras["noise_draws"] += 1
            run.step(loss=loss.item())
        scheduler.step()
        subset = torch.randperm(120)[:16]
        with torch.no_grad():
            run.log(val=float(torch.nn.functional.mse_loss(model(data.tensors[0][subset]),
                                                           data.tensors[1][subset])))
    return float(run.extras["noise_draws"])
