"""The CIFAR-10 CNN of the seed (a Keras tutorial's model, in PyTorch), with augmentation.

Two 3x3 conv layers of 32 filters ("same" padding) with dropout 0.2 between them,
max pooling, a dense layer of 512 with dropout 0.5, and 10 outputs; every kernel
kept to a max-norm of 3 (Keras ``MaxNorm(3)``). SGD with momentum 0.9, learning
rate 0.01 decayed after every batch as Keras' ``decay=lr/epochs`` did
(``lr / (1 + decay * updates)``), 25 epochs, batches of 32, pixels scaled to [0, 1].
The seed reached about 68% test accuracy, without augmentation (``augment: false``).

Training images get the usual augmentation, in :class:`AugmentedImages`'s
``__getitem__`` with torch ops (no torchvision): padded by 4 pixels, cropped back
to 32 at a random place, flipped left-right half the time, loaded by two
``DataLoader`` workers (``workers``). colabrun seeds each batch's draws by the
batch, so a run resumed mid-epoch, with any number of workers, repeats them
exactly (docs/concepts.md#rules-for-a-bit-exact-resume).

It reads the CIFAR-10 *binary* batches from ``params.data_dir``, never the pickled
"python version" (unpickling a file runs code from it); nothing is downloaded
(see :func:`colabrun.jobs.examples.datasets.load_cifar10`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from colabrun.jobs.examples.datasets import data_dir, load_cifar10, scale

DEFAULT_DATA_DIR = "/content/drive/MyDrive/data/cifar10"
MAX_NORM = 3.0
PADDING = 4


def random_crop_flip(image: torch.Tensor, padding: int = PADDING) -> torch.Tensor:
    """``image`` (``(C, H, W)``) padded with zeros by ``padding``, cropped back to its size
    at a random place, and flipped left-right half the time; draws from torch's generator."""
    height, width = image.shape[-2:]
    padded = nn.functional.pad(image, (padding, padding, padding, padding))
    top, left = torch.randint(0, 2 * padding + 1, (2,)).tolist()
    crop = padded[..., top:top + height, left:left + width]
    return crop.flip(-1) if bool(torch.rand(()) < 0.5) else crop


class AugmentedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(image, label)`` pairs, each image through :func:`random_crop_flip` when indexed.

    Args:
        images: uint8 of shape ``(N, 3, H, W)``.
        labels: int64 of shape ``(N,)``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_crop_flip(self.images[index]), self.labels[index]


class Cifar10Net(nn.Module):
    """The seed's network; ``width`` filters per conv layer (32), ``hidden`` dense units (512)."""

    def __init__(self, width: int = 32, hidden: int = 512) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * 16 * 16, hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


def apply_max_norm(model: nn.Module, max_norm: float = MAX_NORM) -> None:
    """Scale each filter and each dense unit's weights down to an L2 norm of ``max_norm``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.renorm_(2, 0, max_norm)


class KerasDecay:
    """The learning-rate factor of Keras' legacy ``decay``, for ``LambdaLR``:
    ``1 / (1 + decay * updates)``, the updates counted before this one."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, updates: int) -> float:
        return 1.0 / (1.0 + self.decay * updates)


def evaluate(model: nn.Module, loader: DataLoader[Any], device: torch.device) -> float:
    """Accuracy of ``model`` over ``loader``."""
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for images, labels in loader:
            predicted = model(scale(images, device)).argmax(dim=1)
            correct += int((predicted == labels.to(device)).sum().item())
            seen += len(labels)
    model.train()
    return correct / max(seen, 1)


def train_epoch(run: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader[Any]
                ) -> None:
    """One epoch of the batches still to do; the learning rate decays after every batch."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for batch in run.batches(loader):
        optimizer.zero_grad()
        total = 0.0
        for (images, labels), weight in run.split(batch):
            loss = loss_fn(model(scale(images, run.device)), labels.to(run.device)) * weight
            loss.backward()
            total += loss.item()
        optimizer.step()
        apply_max_norm(model)
        scheduler.step()
        run.step(loss=total)


def train(run: Any) -> dict[str, float]:
    """The training function colabrun calls with its run handle.

    Params: ``data_dir``, ``batch_size`` (32), ``lr`` (0.01), ``decay`` (0.0004, the seed's
    lr/epochs), ``momentum`` (0.9), ``width`` (32), ``hidden`` (512), ``train_batches``
    (5: the data batch files to read), ``test_batch_size`` (1000), ``augment`` (true: random
    crop and flip), ``workers`` (2: DataLoader processes).
    """
    params = run.params
    folder = data_dir(params, DEFAULT_DATA_DIR)
    batches = int(params.get("train_batches", 5))
    images, labels = load_cifar10(folder, train=True, batches=batches)
    train_set: Dataset[Any] = (
        AugmentedImages(images, labels) if bool(params.get("augment", True))
        else TensorDataset(images, labels))
    test_set = TensorDataset(*load_cifar10(folder, train=False))
    loader = DataLoader(train_set, batch_size=int(params.get("batch_size", 32)), shuffle=True,
                        num_workers=int(params.get("workers", 2)))
    test_loader = DataLoader(test_set, batch_size=int(params.get("test_batch_size", 1000)))
    model = Cifar10Net(width=int(params.get("width", 32)),
                       hidden=int(params.get("hidden", 512))).to(run.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(params.get("lr", 0.01)),
                                momentum=float(params.get("momentum", 0.9)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, KerasDecay(float(params.get("decay", 0.0004)))
    )
    run.track(model=model, optimizer=optimizer, scheduler=scheduler)
    accuracy = 0.0
    for _epoch in run.epochs():
        train_epoch(run, model, optimizer, scheduler, loader)
        accuracy = evaluate(model, test_loader, run.device)
        run.log(test_accuracy=accuracy)
    return {"test_accuracy": accuracy}
