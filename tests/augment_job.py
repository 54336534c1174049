"""A training job whose Dataset augments at random in DataLoader workers.

Each sample is cropped at a random place (torch), flipped half the time (NumPy)
and shifted by Gaussian noise (Python's ``random.gauss`` and NumPy's
``normal``, whose caches hold one value between calls); the model has dropout,
which draws from the training process's torch stream. The worker count comes
from :data:`WORKERS_ENV`, so a session can change it while the spec, and its
fingerprint, stay the same. Each step sleeps ``params["sleep_s"]`` (0), so that the
uploads to the root keep up with training on a loaded machine. It returns how many
batches this session loaded in worker processes, so a test can check that they were used.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

WORKERS_ENV = "COLABRUN_TEST_WORKERS"
SAMPLES, BATCH = 96, 8  # 12 batches an epoch


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """``(image, label, loaded_in_a_worker)``: 3x8x8 images, augmented when indexed."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        top, left = torch.randint(0, 3, (2,)).tolist()
        image = nn.functional.pad(self.images[index], (1, 1, 1, 1))[:, top:top + 8, left:left + 8]
        if np.random.rand() < 0.5:
            image = image.flip(-1)
        image = image + random.gauss(0.0, 0.1) + float(np.random.normal(0.0, 0.1))
        return image, self.labels[index], torch.tensor(get_worker_info() is not None)


def train(run: Any) -> dict[str, int]:
    generator = torch.Generator().manual_seed(0)
    data = Augmented(torch.randn(SAMPLES, 3, 8, 8, generator=generator),
                     torch.randint(0, 4, (SAMPLES,), generator=generator))
    loader = DataLoader(data, batch_size=BATCH, shuffle=True,
                        num_workers=int(os.environ.get(WORKERS_ENV, "0")))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.25),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run.track(model=model, optimizer=optimizer)
    in_workers, sleep_s = 0, float(run.params.get("sleep_s", 0.0))
    for _epoch in run.epochs():
        for images, labels, loaded_in_worker in run.batches(loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            in_workers += int(loaded_in_worker.all())
            time.sleep(sleep_s)
            run.step(loss=loss.item())
    return {"batches_loaded_in_workers": in_workers}
