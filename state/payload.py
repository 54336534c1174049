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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, cast

from colabrun.jobs.errors import CheckpointError
from colabrun.state.manifest import PAYLOAD_NAME

if TYPE_CHECKING:
    import torch


def save_tensors(payload: Mapping[str, Any], file: IO[bytes]) -> None:
    """Write ``payload`` into ``file`` with ``torch.save``, without zip CRC32s.

    The manifest's sha256 of every piece covers the same bytes and is checked before a
    checkpoint is loaded or uploaded; the CRC32s cost the save a third more CPU
    (benchmarks/README.md#measurements-behind-the-constants): on a GPU runtime, where a
    writer thread saves in the training process, CPU that the training's data loading
    and Python could use. ``torch.load`` reads such a file; ``unzip -t`` would flag it.

    Args:
        payload: tensors and plain data, by name.
        file: opened for writing (the storage edge's hashing writer).
    """
    import torch

    with _without_zip_crc32(file) as target:
        torch.save(dict(payload), target)


@contextmanager
def _without_zip_crc32(file: IO[bytes]) -> Iterator[IO[bytes]]:
    """``file``, to which a ``torch.save`` started inside writes no zip CRC32s.

    The option is process-wide, but torch reads it once, when its zip writer opens,
    before any byte is written: it is switched off here and back on at the first write
    (or on the way out). Another thread's ``torch.save`` (the training code's own) keeps
    its CRC32s unless its writer opens in that window, the pickling of this payload's
    structure (milliseconds). Before torch 2.5 there is no option: the CRC32s stay.
    """
    import torch.serialization

    set_option = getattr(torch.serialization, "set_crc32_options", None)
    if set_option is None:
        yield file
        return
    previous = torch.serialization.get_crc32_options()
    target = _FirstWrite(file, lambda: set_option(previous))
    set_option(False)
    try:
        yield cast("IO[bytes]", target)
    finally:
        target.done()


class _FirstWrite:
    """A file that calls ``before`` once, ahead of its first write (or at :meth:`done`,
    if none came), and passes the rest on."""

    def __init__(self, file: IO[bytes], before: Callable[[], object]) -> None:
        self._file = file
        self._before: Callable[[], object] | None = before

    def done(self) -> None:
        """Call ``before`` unless it was called."""
        before, self._before = self._before, None
        if before is not None:
            before()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.done()
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


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
