"""The raw filesystem edge: the calls :class:`colabrun.state.storage.Storage` makes.

:class:`Fs` is the seam where tests inject faults (a call that fails with
``OSError(errno.EIO)``, or hangs); :class:`OsFs` is the real filesystem. Nothing
here retries, times out or translates errors: the storage edge does, around
every call (docs/colab.md#drive-pitfalls).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

#: what ``sendfile`` fails with where a filesystem (or, ENOTSOCK, macOS) cannot copy files
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP,
                          errno.ENOTSOCK})

#: the most one read of a file takes (read at call time: tests shrink it)
CHUNK_BYTES = 8 * 1024 * 1024
#: the most one ``sendfile`` call copies (Linux's own limit is just under 2 GiB)
SENDFILE_MAX_BYTES = 1 << 30


class Fs(Protocol):
    """Raw filesystem calls: the seam where faults are injected."""

    def open(self, path: Path, mode: str) -> IO[bytes]: ...

    def fsync(self, file: IO[bytes]) -> None: ...

    def fsync_dir(self, path: Path) -> None: ...

    def replace(self, src: Path, dst: Path) -> None: ...

    def listdir(self, path: Path) -> list[str]: ...

    def stat_size(self, path: Path) -> int: ...

    def makedirs(self, path: Path) -> None: ...

    def truncate(self, path: Path) -> None: ...

    def unlink(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def copy_range(self, src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int: ...


def copy_by_writes(src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int:
    """Copy up to ``count`` bytes of ``src`` from ``offset`` with one ``dst.write``.

    Args:
        src: the file read (with ``pread``: its position is left alone).
        dst: the file written, at its position.
        offset: where in ``src`` to start.
        count: the most to copy (and at most :data:`CHUNK_BYTES`).

    Returns:
        The bytes copied (0: the end of ``src``).
    """
    data = os.pread(src.fileno(), min(count, CHUNK_BYTES), offset)
    if data:
        dst.write(data)
    return len(data)


class OsFs:
    """The real filesystem."""

    def open(self, path: Path, mode: str) -> IO[bytes]:
        # appends unbuffered: :func:`append_to` must know what reached the file
        return open(path, mode, buffering=0 if "a" in mode else -1)  # noqa: SIM115

    def fsync(self, file: IO[bytes]) -> None:
        file.flush()
        os.fsync(file.fileno())

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def stat_size(self, path: Path) -> int:
        return os.stat(path).st_size

    def makedirs(self, path: Path) -> None:
        os.makedirs(path, exist_ok=True)

    def truncate(self, path: Path) -> None:
        os.truncate(path, 0)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def copy_range(self, src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int:
        """Copy up to ``count`` bytes of ``src`` from ``offset`` to ``dst`` (at its
        position); the bytes copied (0: the end of ``src``). In the kernel
        (``sendfile``: no copies through Python; an upload of 0.8 GB took 0.99 s,
        not 1.66), or by a read and a write where the filesystems refuse it."""
        if hasattr(os, "sendfile"):  # not on Windows
            dst.flush()
            try:
                return os.sendfile(dst.fileno(), src.fileno(), offset, count)
            except OSError as exc:
                if exc.errno not in _NO_SENDFILE:
                    raise
        return copy_by_writes(src, dst, offset, count)


def read_ahead(source: IO[bytes]) -> None:
    """Ask the kernel to read all of ``source`` into the page cache, in the background.

    A kernel copy reads its source one chunk at a time; where the source has left the
    cache (a big checkpoint, memory reclaimed), reading ahead in parallel made the copy
    of a 0.8 GB file twice as fast (benchmarks/README.md, the ``upload`` case). Best
    effort: a file with no descriptor, or a platform without ``posix_fadvise``, skips it.
    """
    try:
        os.posix_fadvise(source.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
    except (AttributeError, OSError, ValueError):
        pass


def copy_whole(fs: Fs, source: IO[bytes], target: IO[bytes],
               on_first_write: Callable[[], None] | None = None) -> int:
    """Copy all of ``source`` to ``target`` with ``fs.copy_range`` (in the kernel where
    it can): a first chunk alone, so that ``on_first_write`` sees a partly written
    file (what a kill "mid-upload" leaves), then the rest.

    Args:
        fs: whose ``copy_range`` copies.
        source: opened for reading, from its start.
        target: opened for writing.
        on_first_write: called once the first chunk is in ``target``.

    Returns:
        The bytes copied.
    """
    copied = fs.copy_range(source, target, 0, CHUNK_BYTES)
    if on_first_write is not None:
        target.flush()
        on_first_write()
    while more := fs.copy_range(source, target, copied, SENDFILE_MAX_BYTES):
        copied += more
    return copied


def read_all(fs: Fs, path: Path) -> bytes:
    """The whole content of ``path``."""
    with fs.open(path, "rb") as f:
        return f.read()


def append_to(fs: Fs, path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing), whole or not at all.

    An append that fails part-way (``ENOSPC`` on a full Drive, a lost mount) cuts the
    file back to its size before it, so that the retry adds the record whole instead of
    gluing it to a torn one. Where even the cut fails, the original error is raised.
    """
    with fs.open(path, "ab") as f:
        start = f.seek(0, os.SEEK_END)
        rest = memoryview(data)
        try:
            while rest:
                written = f.write(rest)  # unbuffered: a write may take part of it
                if not written:
                    raise OSError(errno.EIO, f"{path}: a write made no progress")
                rest = rest[written:]
        except BaseException:
            try:
                f.truncate(start)
            except OSError:
                pass
            raise


def listdir_or_empty(fs: Fs, path: Path) -> list[str]:
    """Names in ``path``; empty when it does not exist."""
    try:
        return fs.listdir(path)
    except FileNotFoundError:
        return []


def size_or_none(fs: Fs, path: Path) -> int | None:
    """Size of ``path`` in bytes, or ``None`` when it does not exist."""
    try:
        return fs.stat_size(path)
    except FileNotFoundError:
        return None


def truncate_and_unlink(fs: Fs, path: Path) -> None:
    """Empty ``path``, then delete it; nothing when it does not exist. Emptied first:
    a deleted Drive file still counts against the quota from the Trash for 30 days
    (docs/colab.md#drive-pitfalls), and a delete that fails frees the space too."""
    try:
        fs.truncate(path)
        fs.unlink(path)
    except FileNotFoundError:
        pass


def rmdir_if_present(fs: Fs, path: Path) -> None:
    """Remove the empty folder ``path``; nothing when it does not exist."""
    try:
        fs.rmdir(path)
    except FileNotFoundError:
        pass
