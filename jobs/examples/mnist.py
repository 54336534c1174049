"""The MNIST classifier of PyTorch's MNIST example (the one the Colab walkthrough runs).

As in ``pytorch/examples`` ``mnist/main.py``: two 3x3 conv layers (32 and 64
filters), max pooling, dropout 0.25, a dense layer of 128, dropout 0.5 and a
log-softmax; Adadelta with learning rate 1.0, StepLR with gamma 0.7 after every
epoch, batches of 64, 14 epochs, inputs normalised with mean 0.1307 and std 0.3081.
Only the data order differs: colabrun's own per-epoch shuffle, so a resumed run
sees the same batches.

It reads the four standard idx files (plain or ``.gz``) from ``params.data_dir``;
nothing is downloaded (see :func:`colabrun.jobs.examples.datasets.load_mnist`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colabrun.jobs.examples.datasets import data_dir, load_mnist

DEFAULT_DATA_DIR = "/content/drive/MyDrive/data/mnist"
MEAN, STD = 0.1307, 0.3081


class MnistNet(nn.Module):
    """The example's network; ``width`` filters in the first conv layer (32), twice that
    in the second, ``hidden`` units in the dense layer (128)."""

    def __init__(self, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * width * 12 * 12, hidden)  # 28 -> 26 -> 24 -> pooled 12
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def normalise(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` images as the normalised float ``(N, 1, 28, 28)`` the net takes."""
    return ((images.to(device).float() / 255.0 - MEAN) / STD).unsqueeze(1)


def evaluate(model: nn.Module, loader: DataLoader[Any], device: torch.device
             ) -> tuple[float, float]:
    """Mean negative log-likelihood and accuracy of ``model`` over ``loader``."""
    model.eval()
    loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in loader:
            labels = labels.to(device)
            output = model(normalise(images, device))
            loss += F.nll_loss(output, labels, reduction="sum").item()
            correct += int((output.argmax(dim=1) == labels).sum().item())
            seen += len(labels)
    model.train()
    return loss / max(seen, 1), correct / max(seen, 1)


def train_epoch(run: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                loader: DataLoader[Any]) -> None:
    """One epoch of the batches still to do (micro-batched by ``run.split`` after an OOM)."""
    model.train()
    for batch in run.batches(loader):
        optimizer.zero_grad()
        total = 0.0
        for (images, labels), weight in run.split(batch):
            output = model(normalise(images, run.device))
            loss = F.nll_loss(output, labels.to(run.device)) * weight
            loss.backward()
            total += loss.item()
        optimizer.step()
        run.step(loss=total)


def train(run: Any) -> dict[str, float]:
    """The training function colabrun calls with its run handle.

    Params: ``data_dir``, ``batch_size`` (64), ``test_batch_size`` (1000), ``lr`` (1.0),
    ``gamma`` (0.7), ``width`` (32), ``hidden`` (128).
    """
    params = run.params
    folder = data_dir(params, DEFAULT_DATA_DIR)
    train_set = TensorDataset(*load_mnist(folder, "train"))
    test_set = TensorDataset(*load_mnist(folder, "t10k"))
    loader = DataLoader(train_set, batch_size=int(params.get("batch_size", 64)), shuffle=True)
    test_loader = DataLoader(test_set, batch_size=int(params.get("test_batch_size", 1000)))
    model = MnistNet(width=int(params.get("width", 32)),
                     hidden=int(params.get("hidden", 128))).to(run.device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=float(params.get("lr", 1.0)))
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=1, gamma=float(params.get("gamma", 0.7))
    )
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)
    accuracy = 0.0
    for _epoch in run.epochs():
        train_epoch(run, model, optimizer, loader)
        scheduler.step()
        test_loss, accuracy = evaluate(model, test_loader, run.device)
        run.log(test_loss=test_loss, test_accuracy=accuracy)
    return {"test_accuracy": accuracy}
