"""Tiny dataset files in the real formats, written by the tests (nothing is downloaded).

Each writer takes a folder (a ``tmp_path``), writes files the example jobs read
(MNIST idx, CIFAR-10 binary batches, JPEG image folders) and returns what to pass
as ``params.data_dir``. Contents are random but fixed by ``seed``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

MNIST_SIDE = 28
CIFAR_SIDE = 32


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an idx file: 0, 0, type 0x08, ndim, big-endian dims, data."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def mnist_arrays(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random 28x28 uint8 images and their labels 0-9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, MNIST_SIDE, MNIST_SIDE), dtype=np.uint8)
    return images, (np.arange(count) % 10).astype(np.uint8)


def write_mnist(folder: Path, *, train: int = 64, test: int = 16, gz: bool = False,
                seed: int = 0) -> Path:
    """The four MNIST idx files (gzipped with ``gz``) in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        images, labels = mnist_arrays(count, seed + len(split))
        for name, array in ((f"{split}-images-idx3-ubyte", images),
                            (f"{split}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (folder / name).write_bytes(data)
    return folder


def cifar_records(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random CIFAR-10 images ``(N, 3, 32, 32)`` uint8 and their labels 0-9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 3, CIFAR_SIDE, CIFAR_SIDE), dtype=np.uint8)
    return images, (np.arange(count) % 10).astype(np.uint8)


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Binary CIFAR-10 records: per image 1 label byte, then its R, G and B planes."""
    flat = images.reshape(len(images), -1)
    return np.concatenate([labels[:, None], flat], axis=1).tobytes()


def write_cifar10(folder: Path, *, per_batch: int = 20, batches: int = 2, test: int = 10,
                  seed: int = 0) -> Path:
    """``folder/cifar-10-batches-bin/`` with ``batches`` data batches and a test batch;
    returns ``folder``."""
    bin_dir = folder / "cifar-10-batches-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, batches + 1):
        (bin_dir / f"data_batch_{i}.bin").write_bytes(
            cifar_batch_bytes(*cifar_records(per_batch, seed + i)))
    (bin_dir / "test_batch.bin").write_bytes(cifar_batch_bytes(*cifar_records(test, seed)))
    return folder


def write_cats_dogs(folder: Path, *, per_class: int = 12, validation_per_class: int = 4,
                    size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """``train/`` and ``validation/`` folders of ``cats/`` and ``dogs/`` JPEGs, each
    ``size`` (width, height; not square, not 150, so the job must resize); returns ``folder``.

    Dogs are brighter than cats, so there is something to learn.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("validation", validation_per_class)):
        for label, name in enumerate(("cats", "dogs")):
            class_dir = folder / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                low = 100 * label
                pixels = rng.integers(low, low + 156, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(class_dir / f"{name[:-1]}.{i}.jpg", quality=90)
    return folder
