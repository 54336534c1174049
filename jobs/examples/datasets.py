"""Readers for the standard dataset files the example jobs train on; nothing is downloaded.

* MNIST: the four idx files (``train-images-idx3-ubyte`` ...), plain or ``.gz``;
* CIFAR-10: the binary batches (``cifar-10-batches-bin/data_batch_1.bin`` ...), never
  the pickled "python version", which would run code from a file on Drive;
* image folders: ``<split>/<class>/*.jpg``, decoded lazily with Pillow.

Each reader takes the folder from ``params.data_dir`` (on Colab a Drive folder)
and fails with one line naming the missing file and where to get it::

    SpecError (colabrun.jobs.errors)
    └── DatasetError            a data file is malformed (not idx, wrong record size...)
        └── DatasetMissing(FileNotFoundError)   a data file or folder is not there
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from colabrun.jobs.errors import EntrypointError, SpecError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})

# idx type codes (http://yann.lecun.com/exdb/mnist/, bottom of the page), big-endian
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CIFAR_SIDE = 32
_CIFAR_RECORD_BYTES = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE


class DatasetError(SpecError):
    """A data file is there but is not in the expected format."""


class DatasetMissing(DatasetError, FileNotFoundError):
    """A data file or folder the job needs is not in ``params.data_dir``."""


def data_dir(params: Mapping[str, Any], default: str) -> Path:
    """The folder named by ``params["data_dir"]`` (``~`` expanded), else ``default``."""
    return Path(str(params.get("data_dir", default))).expanduser()


# -- MNIST ---------------------------------------------------------------------------


def load_mnist(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split from its idx files in ``folder``.

    Args:
        folder: holds ``{split}-images-idx3-ubyte`` and ``{split}-labels-idx1-ubyte``,
            each possibly gzipped (``.gz``), directly or under ``MNIST/raw`` (where
            torchvision puts them).
        split: ``"train"`` or ``"t10k"``.

    Returns:
        ``(images, labels)``: uint8 of shape ``(N, 28, 28)`` and int64 of shape ``(N,)``.

    Raises:
        DatasetMissing: a file is not there.
        DatasetError: a file is not an idx file, or images and labels disagree.
    """
    images = read_idx(_find_mnist_file(folder, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find_mnist_file(folder, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(
            f"MNIST {split} files in {folder} do not match: images {tuple(images.shape)}, "
            f"labels {tuple(labels.shape)}; expected (N, 28, 28) and (N,): download them again"
        )
    return images, labels.long()


def _find_mnist_file(folder: Path, name: str) -> Path:
    for candidate in (folder, folder / "MNIST" / "raw"):
        for path in (candidate / name, candidate / f"{name}.gz"):
            if path.is_file():
                return path
    raise DatasetMissing(
        f"MNIST file {name} (or {name}.gz) not found in {folder}: download the four idx "
        f"files from {MNIST_URL} into that folder, or set params.data_dir"
    )


def read_idx(path: Path) -> torch.Tensor:
    """The array in an idx file (plain, or gzipped when the name ends in ``.gz``).

    Raises:
        DatasetError: the file does not start with an idx header or its size is wrong.
    """
    raw = _read_maybe_gzipped(path)
    offset = 4 + 4 * raw[3] if len(raw) >= 4 else 4  # the magic, then one int32 per dim
    if len(raw) < offset or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an idx file (bad header {raw[:offset]!r}): "
                           "download it again")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path} holds {len(raw)} bytes where its header {shape} says "
                           f"{expected}: the file is truncated or damaged; download it again")
    array = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))  # a writable copy


def _read_maybe_gzipped(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path} is not a complete gzip file ({exc}): download it again"
                           ) from exc


# -- CIFAR-10 ------------------------------------------------------------------------


def load_cifar10(folder: Path, *, train: bool, batches: int = 5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR-10 training batches (``data_batch_1..batches``) or the test batch.

    Args:
        folder: ``cifar-10-batches-bin`` itself, or the folder holding it.
        train: the training batches, else ``test_batch.bin``.
        batches: how many training batch files to read (5 in the real dataset).

    Returns:
        ``(images, labels)``: uint8 of shape ``(N, 3, 32, 32)`` and int64 of shape ``(N,)``.

    Raises:
        DatasetMissing: a batch file is not there.
        DatasetError: a file is not made of CIFAR-10 binary records.
    """
    if (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, batches + 1)] if train else ["test_batch.bin"]
    parts = [read_cifar10_batch(_find_cifar10_file(folder, name)) for name in names]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _find_cifar10_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise DatasetMissing(
            f"CIFAR-10 batch {name} not found in {folder}: download the binary version "
            f"{CIFAR10_URL} and extract it there (it makes cifar-10-batches-bin/), "
            "or set params.data_dir"
        )
    return path


def read_cifar10_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The records of one CIFAR-10 binary batch: 1 label byte, then 1024 R, G and B bytes.

    Raises:
        DatasetError: the size is not a whole number of records, or a label is over 9.
    """
    raw = path.read_bytes()
    if not raw or len(raw) % _CIFAR_RECORD_BYTES:
        raise DatasetError(f"{path} holds {len(raw)} bytes, not a whole number of "
                           f"{_CIFAR_RECORD_BYTES}-byte CIFAR-10 records: use the binary "
                           f"version ({CIFAR10_URL}), not the python one")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
    labels = torch.tensor(records[:, 0], dtype=torch.long)
    if int(labels.max()) > 9:
        raise DatasetError(f"{path} has label {int(labels.max())}; CIFAR-10 labels are 0-9: "
                           "is it the CIFAR-100 binary version?")
    images = torch.tensor(records[:, 1:]).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)
    return images, labels


# -- image folders -------------------------------------------------------------------


def image_folder(folder: Path, classes: Sequence[str], *, hint: str) -> list[tuple[Path, int]]:
    """The images of ``folder/<class>/``, labelled by the class's index in ``classes``.

    Sorted by name, so the order (and the run) is the same on every runtime however
    the storage lists files; hidden files (macOS ``._*`` copies) are skipped.

    Args:
        folder: holds one sub-folder per class.
        classes: the class folder names.
        hint: where to get the data, for the error message.

    Raises:
        DatasetMissing: a class folder is missing or holds no images.
    """
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = _images_in(folder / name)
        if not files:
            raise DatasetMissing(f"no images (.jpg, .jpeg, .png) in {folder / name}: {hint}")
        samples.extend((path, label) for path in files)
    return samples


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


class ImageFiles(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images loaded, converted to RGB and resized only when indexed (map-style).

    Args:
        samples: ``(path, label)`` pairs, as :func:`image_folder` returns.
        size: the side of the square images it yields.

    Items are ``(image, label)``: uint8 of shape ``(3, size, size)`` and a float32
    scalar (for a binary cross-entropy).
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], size: int) -> None:
        self.samples = list(samples)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[index]
        return load_image(path, self.size), torch.tensor(float(label))


def load_image(path: Path, size: int) -> torch.Tensor:
    """The image at ``path`` as RGB, resized to ``size`` x ``size``: uint8 ``(3, H, W)``.

    Raises:
        EntrypointError: Pillow is not installed.
        DatasetError: the file is not an image Pillow can decode.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise EntrypointError(
            "the image-folder examples need Pillow: pip install pillow "
            "(or colabrun[examples]); Colab has it"
        ) from exc
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except FileNotFoundError as exc:
        raise DatasetMissing(f"image {path} vanished while training: restore it") from exc
    except (UnidentifiedImageError, OSError) as exc:  # Pillow's decode errors are OSErrors
        raise DatasetError(f"{path} could not be read as an image ({exc}); if the file is "
                           "damaged, remove or replace it") from exc
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def scale(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images as floats in [0, 1] on ``device``."""
    return images.to(device).float() / 255.0
