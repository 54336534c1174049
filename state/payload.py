"""A checkpoint's payload (``state.pt``): saved with ``torch.save``, loaded safely.

Loading uses ``torch.load(weights_only=True)``: a payload holding anything but
tensors and plain data is refused, since unpickling it could run arbitrary code.
A payload that does not deserialise (a newer torch format,
docs/troubleshooting.md#skipped-checkpoints-warnings) is told as a
``CheckpointError`` naming the checkpoint. torch is imported only here, and only
when a payload is saved or loaded: ``colabrun status`` needs none.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from colabrun.jobs.errors import CheckpointError
from colabrun.state.manifest import PAYLOAD_NAME

if TYPE_CHECKING:
    import torch


def save_tensors(payload: Mapping[str, Any], file: IO[bytes]) -> None:
    """Write ``payload`` into ``file`` with ``torch.save``.

    Args:
        payload: tensors and plain data, by name.
        file: opened for writing (the storage edge's hashing writer).
    """
    import torch

    torch.save(dict(payload), file)


def load_tensors(file: IO[bytes], map_location: str | torch.device = "cpu") -> Any:
    """Read a payload with ``torch.load(weights_only=True)``.

    Args:
        file: opened for reading.
        map_location: where the tensors go.

    Returns:
        The payload.

    Raises:
        pickle.UnpicklingError: it holds objects ``weights_only`` refuses.
        RuntimeError: it does not deserialise (as ``ValueError`` and ``EOFError`` may).
    """
    import torch

    return torch.load(file, map_location=map_location, weights_only=True)


@contextmanager
def load_errors_told(name: str) -> Iterator[None]:
    """Turn a failure of loading checkpoint ``name``'s payload that the payload itself
    is at fault for into a :class:`CheckpointError`; let others (the storage's) pass.

    Raises:
        CheckpointError: the payload holds refused objects or does not deserialise.
    """
    try:
        yield
    except CheckpointError:  # a ValueError too: not the payload's loading error
        raise
    except Exception as exc:
        if (error := _loading_error(name, exc)) is None:
            raise
        raise error from exc


def _loading_error(name: str, exc: Exception) -> CheckpointError | None:
    """A loading failure the payload itself is at fault for, as a checkpoint
    error; ``None`` for any other (the storage failed)."""
    if isinstance(exc, pickle.UnpicklingError):  # weights_only refused an object
        return CheckpointError(
            f"checkpoint {name}: {PAYLOAD_NAME} holds objects other than tensors and plain "
            "data; refused, since loading it could run arbitrary code")
    if isinstance(exc, (RuntimeError, ValueError, EOFError)):  # torch's unpickling errors
        return CheckpointError(f"checkpoint {name}: cannot load {PAYLOAD_NAME}: {exc}")
    return None
