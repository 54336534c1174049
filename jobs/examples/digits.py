"""A small CNN on scikit-learn's bundled 8x8 digits: nothing is downloaded.

Deterministic on CPU, a full run takes seconds on 2 cores. It exercises what
bit-exact resume must get right: shuffled batches, dropout (RNG), momentum
(optimizer state) and a learning-rate schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsCNN(nn.Module):
    """Two conv layers, dropout and a small dense head for 1x8x8 images."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(2 * width * 16, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


def load_digits_tensors(
    test_fraction: float = 0.2,
) -> tuple[TensorDataset, TensorDataset]:
    """The digits as (train, test) datasets of float images in [0, 1] and labels.

    The split is fixed (every fifth sample is a test sample), so it never
    depends on a random state.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    step = round(1 / test_fraction)
    is_test = torch.arange(len(labels)) % step == 0
    return (
        TensorDataset(images[~is_test], labels[~is_test]),
        TensorDataset(images[is_test], labels[is_test]),
    )


def evaluate(model: nn.Module, dataset: TensorDataset, device: torch.device) -> float:
    """Accuracy of ``model`` on ``dataset``."""
    model.eval()
    images, labels = (t.to(device) for t in dataset.tensors)
    with torch.no_grad():
        accuracy = (model(images).argmax(dim=1) == labels).float().mean().item()
    model.train()
    return float(accuracy)


def train(run: Any) -> dict[str, float]:
    """The training function colabrun calls with its run handle."""
    params = run.params
    # A model this small gains nothing from a second thread, and on a busy 2-core
    # machine OpenMP's spinning threads made each step ten times slower.
    torch.set_num_threads(int(params.get("threads", 1)))
    train_set, test_set = load_digits_tensors()
    loader = DataLoader(train_set, batch_size=int(params.get("batch_size", 32)), shuffle=True)
    model = DigitsCNN(width=int(params.get("width", 16))).to(run.device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=float(params.get("lr", 0.1)), momentum=0.9
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)
    loss_fn = nn.CrossEntropyLoss()
    accuracy = 0.0
    for _epoch in run.epochs():
        model.train()
        for images, labels in run.batches(loader):
            images, labels = images.to(run.device), labels.to(run.device)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            run.step(loss=loss.item())
        scheduler.step()
        accuracy = evaluate(model, test_set, run.device)
        run.log(test_accuracy=accuracy)
    return {"test_accuracy": accuracy}
