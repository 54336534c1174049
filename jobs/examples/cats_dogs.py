"""The seed's cats-vs-dogs binary classifier on 150x150 images, in PyTorch.

The small CNN of Google's "cats and dogs" Colab exercise: three 3x3 conv layers
(16, 32, 64 filters), each followed by 2x2 max pooling, a dense layer of 512
with dropout 0.5 (as the exercise adds against overfitting), and one sigmoid
output trained with binary cross-entropy
(``BCEWithLogitsLoss``: the sigmoid inside the loss, for stability); RMSprop
with learning rate 0.001 (Keras' rho 0.9 and epsilon 1e-7), batches of 20,
15 epochs, pixels scaled to [0, 1].

It reads the image-folder layout of ``cats_and_dogs_filtered``::

    <data_dir>/train/cats/*.jpg       <data_dir>/validation/cats/*.jpg
    <data_dir>/train/dogs/*.jpg       <data_dir>/validation/dogs/*.jpg

decoding and resizing each image only when its batch comes (Pillow, imported
there); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from colabrun.jobs.errors import SpecError
from colabrun.jobs.examples.datasets import ImageFiles, data_dir, image_folder, scale

DEFAULT_DATA_DIR = "/content/drive/MyDrive/data/cats_and_dogs_filtered"
CLASSES = ("cats", "dogs")  # label 0, label 1
URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


class CatsDogsNet(nn.Module):
    """Three conv blocks of ``width`` (16), twice and four times that many filters, a dense
    layer of ``hidden`` (512) units and one logit, for ``image_size`` square RGB images.

    Raises:
        SpecError: ``image_size`` is too small to survive the three conv blocks.
    """

    def __init__(self, width: int = 16, hidden: int = 512, image_size: int = 150,
                 dropout: float = 0.5) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, side = 3, image_size
        for filters in (width, 2 * width, 4 * width):
            blocks += [nn.Conv2d(channels, filters, 3), nn.ReLU(), nn.MaxPool2d(2)]
            channels, side = filters, (side - 2) // 2
        if side < 1:
            raise SpecError(f"params.image_size {image_size} is too small for three conv "
                            "blocks; use at least 22 (the seed uses 150)")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)  # type: ignore[no-any-return]


def dataset_root(params: Any) -> Path:
    """``params.data_dir``, or its ``cats_and_dogs_filtered`` sub-folder when it has one."""
    folder = data_dir(params, DEFAULT_DATA_DIR)
    unzipped = folder / "cats_and_dogs_filtered"
    return unzipped if unzipped.is_dir() else folder


def load_split(folder: Path, split: str, size: int) -> ImageFiles:
    """The ``train`` or ``validation`` images, resized lazily to ``size``."""
    hint = (f"download {URL} and unzip it so that {folder}/{split}/cats and "
            f"{folder}/{split}/dogs exist, or set params.data_dir")
    return ImageFiles(image_folder(folder / split, CLASSES, hint=hint), size)


def evaluate(model: nn.Module, loader: DataLoader[Any], device: torch.device) -> float:
    """Accuracy of ``model`` over ``loader`` (a logit above 0 says dog)."""
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for images, labels in loader:
            predicted = (model(scale(images, device)) > 0).float()
            correct += int((predicted == labels.to(device)).sum().item())
            seen += len(labels)
    model.train()
    return correct / max(seen, 1)


def train_epoch(run: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                loader: DataLoader[Any]) -> None:
    """One epoch of the batches still to do (micro-batched by ``run.split`` after an OOM)."""
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for batch in run.batches(loader):
        optimizer.zero_grad()
        total = 0.0
        for (images, labels), weight in run.split(batch):
            loss = loss_fn(model(scale(images, run.device)), labels.to(run.device)) * weight
            loss.backward()
            total += loss.item()
        optimizer.step()
        run.step(loss=total)


def train(run: Any) -> dict[str, float]:
    """The training function colabrun calls with its run handle.

    Params: ``data_dir``, ``image_size`` (150), ``batch_size`` (20), ``lr`` (0.001),
    ``width`` (16), ``hidden`` (512), ``dropout`` (0.5), ``val_batch_size`` (100),
    ``workers`` (0: DataLoader processes decoding images; 2 suits Colab).
    """
    params = run.params
    folder, size = dataset_root(params), int(params.get("image_size", 150))
    workers = int(params.get("workers", 0))
    train_set, val_set = load_split(folder, "train", size), load_split(folder, "validation", size)
    loader = DataLoader(train_set, batch_size=int(params.get("batch_size", 20)), shuffle=True,
                        num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=int(params.get("val_batch_size", 100)),
                            num_workers=workers)
    model = CatsDogsNet(width=int(params.get("width", 16)), hidden=int(params.get("hidden", 512)),
                        image_size=size, dropout=float(params.get("dropout", 0.5))
                        ).to(run.device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=float(params.get("lr", 0.001)),
                                    alpha=0.9, eps=1e-7)
    run.track(model=model, optimizer=optimizer)
    accuracy = 0.0
    for _epoch in run.epochs():
        train_epoch(run, model, optimizer, loader)
        accuracy = evaluate(model, val_loader, run.device)
        run.log(val_accuracy=accuracy)
    return {"val_accuracy": accuracy}
