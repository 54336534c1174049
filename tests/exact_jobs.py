"""Training functions that were not exact before issue 15, for tests/runner/test_exact_loops.py.

``accumulating`` steps the optimizer (and ``run.step()``) every ``accumulate`` batches,
with an accumulation spanning each epoch's end (15 batches an epoch); ``draws`` draws
from generators of its own (``own_generators``), through a ``DataLoader`` built with
``generator=`` (``loader: generator``) or from a torchdata ``StatefulDataLoader``
(``loader: stateful``), at the top of each epoch and in the batch body. A test kills
a run mid-accumulation with ``COLABRUN_KILL_AT=batch:N``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

#: ``N``: SIGKILL this process after its N-th batch's backward, before ``run.step()``


def _data(samples: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)  # setup only: never drawn from in training
    return TensorDataset(torch.randn(samples, 6, generator=generator),
                         torch.randn(samples, 1, generator=generator))


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                               torch.nn.Linear(12, 1))


def accumulating(run: Any) -> int:
    """Gradients accumulated over ``accumulate`` batches; a pending count that carries
    across epoch ends, as a loop counting its micro-batches globally does."""
    every = int(run.params["accumulate"])
    loader = DataLoader(_data(120), batch_size=8, shuffle=True)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    run.track(model=model, optimizer=optimizer)
    pending = seen = 0
    for _epoch in run.epochs():
        for x, y in run.batches(loader):
            (torch.nn.functional.mse_loss(model(x), y) / every).backward()
            pending, seen = pending + 1, seen + 1
            if pending == every:
                optimizer.step()
                optimizer.zero_grad()
                pending = 0
                run.step()
    return seen


def _loader(kind: str, data: TensorDataset) -> Any:
    if kind == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(data, batch_size=8, shuffle=True)
    if kind == "generator":
        return DataLoader(data, batch_size=8, shuffle=True,
                          generator=torch.Generator().manual_seed(5))
    return DataLoader(data, batch_size=8, shuffle=True)


def draws(run: Any) -> int:
    """Random numbers from the user's own generators (``generators: true``) and the
    loader's (``loader``: ``plain``, ``generator`` or ``stateful``)."""
    data = _data(96)
    loader = _loader(str(run.params.get("loader", "plain")), data)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run.track(model=model, optimizer=optimizer)
    own = _generators() if run.params.get("generators") else None
    if own is not None:
        run.track(**own)
    seen = 0
    for _epoch in run.epochs():
        scale = 1.0 + (0.1 * _draw(own) if own is not None else 0.0)  # the top of the epoch
        for x, y in run.batches(loader):
            noise = 0.01 * _draw(own, x.shape) if own is not None else 0.0
            loss = torch.nn.functional.mse_loss(model(x * scale + noise), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += 1
            run.step(loss=loss.item())
    return seen


def _generators() -> dict[str, Any]:
    return {"g_torch": torch.Generator().manual_seed(1), "g_numpy": np.random.default_rng(2),
            "g_legacy": np.random.RandomState(3), "g_python": random.Random(4)}


def _draw(own: dict[str, Any], shape: Any = (1,)) -> torch.Tensor:
    """One draw from each generator kind, summed: any one restored wrongly changes it."""
    return (torch.rand(shape, generator=own["g_torch"])
            + torch.from_numpy(own["g_numpy"].standard_normal(tuple(shape))).float()
            + float(own["g_legacy"].rand()) + own["g_python"].gauss(0.0, 1.0))
