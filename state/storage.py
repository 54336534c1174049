"""The one edge through which every byte of the root folder passes.

:class:`Storage` wraps a raw filesystem (:class:`colabrun.state.filesystem.Fs`, by
default the real one) with what a Drive mount needs (docs/colab.md#drive-pitfalls):
retries of transient errors, a timeout on every call, and errors translated into
:class:`StorageError` naming the path, the errno and what to check
(:mod:`colabrun.state.resilience`). Writes are hashed as they go
(:mod:`colabrun.state.digests`); reads of checkpoints are verified as they go
(:mod:`colabrun.state.verified`). The ``Fs`` seam is where tests inject faults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from colabrun.state.digests import HashingWriter, Written, piece_sha256, sha256_of_file
from colabrun.state.filesystem import (
    Fs,
    OsFs,
    append_to,
    copy_whole,
    listdir_or_empty,
    read_ahead,
    read_all,
    rmdir_if_present,
    size_or_none,
    truncate_and_unlink,
)
from colabrun.state.resilience import call_resilient, run_with_timeout, try_limit_s
from colabrun.state.verified import VerifiedReader, consume_verified, consume_whole

T = TypeVar("T")


class Storage:
    """Retried, time-limited file operations on the root (and local staging).

    Args:
        fs: the raw filesystem; tests pass one that fails on cue.
        attempts: tries per call for transient errors.
        timeout_s: longest a metadata call may take before :class:`StorageTimeout`;
            ``None``: no limit per call (each call then runs in the caller's thread,
            for a caller that bounds the whole sequence itself, like the local
            writer, whose saves the training thread waits for with a timeout).
        bytes_per_s: slowest acceptable throughput; a bulk write's timeout is
            ``timeout_s + size / bytes_per_s``.
        sleep: how backoff waits (a fake clock's sleep in tests).
        durable: fsync files and folders (the root). ``False`` for local staging:
            it must survive the worker's death, which the page cache does; the
            machine's death takes the local disk with it, fsync or not.
    """

    def __init__(
        self,
        fs: Fs | None = None,
        *,
        attempts: int = 5,
        timeout_s: float | None = 120.0,
        bytes_per_s: float = 2e6,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] | None = None,
        durable: bool = True,
    ) -> None:
        self.fs: Fs = fs or OsFs()
        self.durable = durable
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.bytes_per_s = bytes_per_s
        self.backoff_s = backoff_s
        self._sleep = sleep

    # -- the wrapper every call goes through ---------------------------------------

    def call(self, what: str, path: Path, fn: Callable[[], T], *, timeout_s: float | None = None
             ) -> T:
        """Run ``fn`` (one try, repeatable) with retries on transient errors and a timeout
        per try (:func:`colabrun.state.resilience.call_resilient`); what it returned.

        Args:
            what, path: the operation (``"read"``) and its path, for messages.
            timeout_s: this call's timeout per try, instead of :attr:`timeout_s`
                (ignored when that is ``None``: then nothing is timed).

        Raises:
            StorageTimeout: one try did not return in time.
            StorageError: the last try failed with an ``OSError``.
        """
        return call_resilient(what, path, fn, attempts=self.attempts, backoff_s=self.backoff_s,
                              sleep=self._sleep or time.sleep,
                              limit_s=try_limit_s(self.timeout_s, timeout_s))

    def batch(self, what: str, path: Path, fn: Callable[[], T]) -> T:
        """Run ``fn``, which makes several calls of this storage, in one thread: one handoff
        to it and back instead of one per call (committing a checkpoint under the root: ~10
        calls). Each call inside keeps its retries and its time limit, counted from its
        own start; once one times out, the calls after it are refused. Not retried whole.

        Raises:
            StorageTimeout: a call inside did not return in time (or ``fn`` spent
                :attr:`timeout_s` between calls).
            StorageError, BaseException: what ``fn`` raised.
        """
        if self.timeout_s is None:
            return fn()
        return run_with_timeout(what, path, fn, self.timeout_s)

    def _bulk_timeout(self, expected_bytes: int) -> float | None:
        if self.timeout_s is None:
            return None
        return self.timeout_s + expected_bytes / self.bytes_per_s

    # -- operations ---------------------------------------------------------------

    def write_stream(
        self, path: Path, produce: Callable[[Any], None], *, expected_bytes: int = 0,
        on_first_write: Callable[[], None] | None = None, piece_bytes: int | None = None,
    ) -> Written:
        """Create ``path``, let ``produce(file)`` write into it, fsync; return size and sha256.

        The whole write is retried from the start on a transient error, so
        ``produce`` must be repeatable.

        Args:
            expected_bytes: about how much it writes (the timeout grows with it).
            on_first_write: called once the first bytes are out (a fault point).
            piece_bytes: hash in pieces of this size (:class:`colabrun.state.digests.Digest`).

        Raises:
            StorageError: the write failed, even after retries (``StorageTimeout``: it hung).
        """

        def attempt() -> Written:
            with self.fs.open(path, "wb") as raw:
                writer = HashingWriter(raw, on_first_write, piece_bytes)
                writer.fill(produce)
                self._settle(raw)
            return writer.written()

        return self.call("write", path, attempt, timeout_s=self._bulk_timeout(expected_bytes))

    def copy_file(self, src: Path, dst: Path, *, expected_bytes: int = 0,
                  on_first_write: Callable[[], None] | None = None,
                  src_fs: Fs | None = None) -> int:
        """Copy ``src`` to ``dst``, in the kernel where it can (``Fs.copy_range``), and
        fsync; the bytes copied. Retried whole.

        Args:
            src: a local file, opened with ``src_fs`` (by default this storage's filesystem).
            expected_bytes: about how big ``src`` is (the timeout grows with it).
            on_first_write: called once the first chunk is in ``dst`` (a fault point).

        Raises:
            StorageError: the copy failed, even after retries (``StorageTimeout``: it hung).
        """

        def attempt() -> int:
            with (src_fs or self.fs).open(src, "rb") as source, \
                    self.fs.open(dst, "wb") as target:
                read_ahead(source)
                copied = copy_whole(self.fs, source, target, on_first_write)
                self._settle(target)
            return copied

        return self.call("write", dst, attempt, timeout_s=self._bulk_timeout(expected_bytes))

    def _settle(self, file: IO[bytes]) -> None:
        """A written file, durable (the root) or in the page cache (local staging)."""
        if self.durable:
            self.fs.fsync(file)
        else:
            file.flush()  # in the page cache: survives this process's death

    def write_bytes(self, path: Path, data: bytes) -> Written:
        """Write ``data`` to ``path`` and fsync it."""
        return self.write_stream(path, lambda f: f.write(data), expected_bytes=len(data))

    def append_bytes(self, path: Path, data: bytes) -> None:
        """Append ``data`` to ``path`` (logs and metrics; not a commit)."""
        self.call("append", path, partial(append_to, self.fs, path, data))

    def read_bytes(self, path: Path) -> bytes:
        """The whole content of ``path``."""
        return self.call("read", path, partial(read_all, self.fs, path))

    def sha256_of(self, path: Path, *, expected_bytes: int = 0) -> Written:
        """Size and sha256 of ``path``, read in chunks."""

        def attempt() -> Written:
            with self.fs.open(path, "rb") as f:
                return sha256_of_file(f)

        return self.call("read", path, attempt, timeout_s=self._bulk_timeout(expected_bytes))

    def piece_digest(self, path: Path, index: int, piece_bytes: int, size: int) -> bytes:
        """The sha256 of piece ``index`` of a ``size``-byte file (raw; not retried: for
        callers inside :meth:`call`)."""
        with self.fs.open(path, "rb") as f:
            return piece_sha256(f, index, piece_bytes, size)

    def read_verified(self, path: Path, consume: Callable[[IO[bytes]], T], *, size: int,
                      piece_bytes: int, pieces: Sequence[str], first: Sequence[int] = ()) -> T:
        """``consume(file)`` while the file's pieces are verified on every CPU: it reads
        only bytes of pieces that matched ``pieces``, and returns only once all did
        (:class:`colabrun.state.verified.VerifiedReader`). A file of one piece is read
        whole, checked, and consumed from memory (:func:`~colabrun.state.verified.consume_whole`).

        Args:
            consume: reads the verified file; retried with the read, so repeatable.
            size, piece_bytes, pieces: the size the file must have, that of its pieces
                (but the last), and their sha256 digests, hex.
            first: pieces to verify before the others (those ``consume`` reads first).

        Raises:
            SizeMismatch: the file is not ``size`` bytes long.
            PieceMismatch: a piece does not match (whatever ``consume`` made of it).
            StorageError: the file could not be read, even after retries.
        """

        def whole() -> T:  # one piece: nothing to overlap; read it at once, from memory
            return consume_whole(self.fs.open(path, "rb"), consume, size=size, sha256=pieces[0])

        def overlapped() -> T:
            reader = VerifiedReader(
                self.fs.open(path, "rb"), size=size, piece_bytes=piece_bytes, pieces=pieces,
                first=first,
                hash_piece=lambda index: self.piece_digest(path, index, piece_bytes, size))
            return consume_verified(reader, consume)

        return self.call("read", path, whole if len(pieces) == 1 else overlapped,
                         timeout_s=self._bulk_timeout(size))

    def replace(self, src: Path, dst: Path) -> None:
        """Atomically rename ``src`` over ``dst`` (on one local filesystem)."""
        self.call("rename", src, lambda: self.fs.replace(src, dst))

    def fsync_dir(self, path: Path) -> None:
        """Make a folder's entries durable (after a create or rename)."""
        if self.durable:
            self.call("fsync", path, lambda: self.fs.fsync_dir(path))

    def listdir(self, path: Path) -> list[str]:
        """Names in ``path``; empty when it does not exist."""
        return self.call("list", path, partial(listdir_or_empty, self.fs, path))

    def size_of(self, path: Path) -> int | None:
        """Size of ``path`` in bytes, or ``None`` when it does not exist."""
        return self.call("stat", path, partial(size_or_none, self.fs, path))

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its parents if missing."""
        self.call("mkdir", path, lambda: self.fs.makedirs(path))

    def discard_file(self, path: Path) -> None:
        """Truncate then delete ``path``: a deleted Drive file still counts
        against the quota from the Trash for 30 days (docs/colab.md#drive-pitfalls)."""
        self.call("delete", path, partial(truncate_and_unlink, self.fs, path))

    def discard_tree(self, path: Path) -> None:
        """Truncate and delete every file below ``path`` (manifests first), then the folders."""
        names = self.listdir(path)
        names.sort(key=lambda n: n != "manifest.json")  # un-commit before anything else
        for name in names:
            child = path / name
            if self.call("stat", child, lambda c=child: c.is_dir()):  # type: ignore[misc]
                self.discard_tree(child)
            else:
                self.discard_file(child)
        self.call("rmdir", path, partial(rmdir_if_present, self.fs, path))
