"""The files of a checkpoint being committed: each written into its temporary folder, then
checked on disk against what was written, before the manifest names it.

Two ways in: :func:`write_payload` (the tensors, ``torch.save``\\ d and hashed in pieces as
they are written) and :func:`copy_file` (a committed checkpoint's file, copied from another
store, e.g. a local one to the root). The commit protocol around them is
:class:`~colabrun.state.checkpoints.CheckpointStore`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from colabrun.jobs.errors import StorageError
from colabrun.state.digests import HASH_PIECE_BYTES
from colabrun.state.filesystem import Fs
from colabrun.state.manifest import PAYLOAD_NAME, ManifestFile
from colabrun.state.payload import save_tensors
from colabrun.state.storage import Storage


def write_payload(storage: Storage, tmp: Path, payload: Mapping[str, Any], *,
                  expected_bytes: int, on_first_write: Callable[[], None],
                  piece_bytes: int = HASH_PIECE_BYTES) -> ManifestFile:
    """``torch.save`` the payload into ``tmp``, hashed in pieces; its manifest entry.

    Args:
        storage: the store's storage edge.
        tmp: the checkpoint's temporary folder.
        payload: the tensors (and plain values) to save.
        expected_bytes: about how big it will be (the timeout grows with it).
        on_first_write: called once the first bytes are written (a fault point).
        piece_bytes: the size of the pieces hashed (each verified on its own when loaded).

    Returns:
        The file's entry: its size, its digest, and those of its pieces.

    Raises:
        StorageError: the storage failed even after retries, or holds fewer bytes than
            were written.
    """
    path = tmp / PAYLOAD_NAME
    written = storage.write_stream(
        path, partial(save_tensors, payload), expected_bytes=expected_bytes,
        on_first_write=on_first_write, piece_bytes=piece_bytes)
    on_disk = storage.size_of(path)
    if on_disk != written.size_bytes:
        raise StorageError(f"{path}: wrote {written.size_bytes} bytes but {on_disk} are on "
                           "disk; the storage lost data (is the disk full?)")
    return ManifestFile(path=PAYLOAD_NAME, size_bytes=written.size_bytes,
                        sha256=written.sha256, piece_bytes=piece_bytes,
                        pieces=written.pieces)


def copy_file(storage: Storage, src: Path, target: Path, file: ManifestFile, *, name: str,
              src_fs: Fs, verify: Callable[[], object] | None,
              on_first_write: Callable[[], None]) -> None:
    """Copy one file of checkpoint ``name`` in the kernel, while ``verify`` (if given) checks
    the source against its manifest on the other CPUs. Both read the same pages of a file
    written moments ago, which a local commit never changes: the copy's bytes are the
    verified ones. (A copy that still differs, say a mount that loses data, fails the
    verification that comes before a resume, as any damaged checkpoint does.)

    Args:
        storage: the storage edge of the store copied to.
        src: the file copied, opened with ``src_fs`` (the source store's filesystem, so
            that faults injected into this store's stay off the source's disk).
        target: the file written, in the checkpoint's temporary folder.
        file: its manifest entry.
        name: the checkpoint's name, for messages.
        verify: checks the source file, raising what is wrong with it.
        on_first_write: called once the first bytes are written (a fault point).

    Raises:
        CheckpointError: ``verify`` found the source damaged (the source is at fault).
        StorageError: this storage failed even after retries, or the copy's size is not
            the manifest's.
    """

    def copy() -> int:
        return storage.copy_file(src, target, expected_bytes=file.size_bytes,
                                 on_first_write=on_first_write, src_fs=src_fs)

    if verify is None:
        copied = copy()
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="colabrun-verify") as pool:
            checked = pool.submit(verify)
            try:
                copied = copy()
            finally:
                source_error = checked.exception()
        if source_error is not None:  # the source is at fault, not this store
            raise source_error
    on_disk = storage.size_of(target)
    if copied != file.size_bytes or on_disk != file.size_bytes:
        raise StorageError(
            f"{target}: the copy does not match checkpoint {name} "
            f"({on_disk} bytes on disk, {file.size_bytes} expected); the storage lost data"
        )
