"""The verified read: a file consumed only through bytes whose digests matched.

A resume loads a checkpoint while it is verified (docs/colab.md#drive-pitfalls:
a Drive file may come back torn or changed): :class:`VerifiedReader` hashes the
pieces on every CPU and hands out only bytes of pieces that matched, so
``torch.load`` never sees an unverified byte. A file of one piece is read whole
and checked first (:func:`consume_whole`). Mismatches are raised as
:class:`PieceMismatch` and :class:`SizeMismatch`, which the checkpoint store
translates into ``CheckpointError``.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, TypeVar

T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (how many threads hash pieces).

    Returns:
        At least 1.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class PieceMismatch(Exception):
    """A piece of a file does not hash to its expected digest."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__(f"piece {index + 1} of {count}")
        self.index, self.count = index, count


class SizeMismatch(Exception):
    """A file is not of its expected size."""

    def __init__(self, actual: int, expected: int) -> None:
        super().__init__(f"{actual} bytes, {expected} expected")
        self.actual, self.expected = actual, expected


def consume_whole(file: IO[bytes], consume: Callable[[IO[bytes]], T], *, size: int,
                  sha256: str) -> T:
    """Read a file of one piece whole, check it, and ``consume`` it from memory:
    nothing to overlap, and no threads to start
    (benchmarks/README.md#measurements-behind-the-constants).

    Args:
        file: the open file; it is closed.
        consume: what reads the verified bytes.
        size: the size the file must have.
        sha256: the digest it must have.

    Returns:
        What ``consume`` returned.

    Raises:
        SizeMismatch: the file is not ``size`` bytes long.
        PieceMismatch: it does not hash to ``sha256``.
    """
    with file:
        data = file.read(size + 1)
    if len(data) != size:
        raise SizeMismatch(len(data), size)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise PieceMismatch(0, 1)
    return consume(io.BytesIO(data))


def consume_verified(reader: VerifiedReader, consume: Callable[[IO[bytes]], T]) -> T:
    """``consume(reader)``, then wait until every piece is verified; close the reader.

    Args:
        reader: the file, being verified.
        consume: what reads it.

    Returns:
        What ``consume`` returned, once all pieces matched.

    Raises:
        PieceMismatch: a piece did not match (whatever ``consume`` made of it).
        BaseException: a piece could not be read, or ``consume`` failed on its own.
    """
    try:
        try:
            value = consume(reader)  # type: ignore[arg-type]
        except BaseException:
            failure = reader.failure()
            if failure is not None:  # what the loader tripped on, told plainly
                raise failure from None
            raise
        reader.verify_all()
        return value
    finally:
        reader.close()


class VerifiedReader(io.RawIOBase):
    """A file read as it is verified: it returns bytes only from pieces whose sha256
    matched, and waits for the others.

    The pieces are hashed on every CPU, ``first`` ones first (a zip archive, as
    ``torch.save`` writes, is read from its end first), then in order; the
    reader follows them. Verifying and loading a checkpoint so overlap, yet no
    unverified byte reaches the loader.

    Args:
        file: the open file, owned (closed) by the reader.
        size: the size it must have.
        piece_bytes: the size of each piece but the last.
        pieces: each piece's expected sha256, hex.
        first: pieces to hash before the others.
        hash_piece: the raw sha256 of piece ``index`` (read on a file of its own).

    Raises:
        SizeMismatch: the file is not ``size`` bytes long (checked on the open file).
    """

    def __init__(self, file: IO[bytes], *, size: int, piece_bytes: int,
                 pieces: Sequence[str], first: Sequence[int] = (),
                 hash_piece: Callable[[int], bytes]) -> None:
        super().__init__()
        self._file, self._size, self._piece_bytes = file, size, piece_bytes
        self._hash_piece = hash_piece
        self._expected = list(pieces)
        count = len(self._expected)
        self._order = [*dict.fromkeys(i for i in first if 0 <= i < count),
                       *(i for i in range(count) if i not in first)]
        self._done: list[bool | None] = [None] * count  # None: not hashed yet
        self._error: BaseException | None = None  # a piece could not be read
        self._next = 0
        self._stopped = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []  # close() works even if the size is wrong
        actual = self._file.seek(0, io.SEEK_END)
        if actual != size:  # checked on the open file: no round trip of its own
            self._file.close()
            raise SizeMismatch(actual, size)
        self._file.seek(0)
        self._threads = [threading.Thread(target=self._hash_pieces, name="colabrun-hash",
                                          daemon=True)
                         for _ in range(min(usable_cpus(), count))]
        for thread in self._threads:
            thread.start()

    def _hash_pieces(self) -> None:
        while (index := self._claim()) is not None:
            self._record(index, self._matches(index))

    def _claim(self) -> int | None:
        """The next piece to hash, or ``None`` when all are taken or the reader closed."""
        with self._cond:
            if self._stopped or self._next == len(self._order):
                return None
            self._next += 1
            return self._order[self._next - 1]

    def _matches(self, index: int) -> bool:
        try:
            return self._hash_piece(index).hex() == self._expected[index]
        except BaseException as exc:  # raised to the reader
            with self._cond:
                self._error = self._error or exc
            return False

    def _record(self, index: int, good: bool) -> None:
        with self._cond:
            self._done[index] = good
            self._cond.notify_all()

    def _wait(self, indices: Iterable[int]) -> None:
        with self._cond:
            for index in indices:
                while self._done[index] is None:
                    self._cond.wait()
                if self._error is not None:
                    raise self._error
                if not self._done[index]:
                    raise PieceMismatch(index, len(self._done))

    def failure(self) -> BaseException | None:
        """A mismatch or read error found so far (whether or not the reader met it)."""
        with self._cond:
            if self._error is not None:
                return self._error
            bad = [i for i, good in enumerate(self._done) if good is False]
        return PieceMismatch(bad[0], len(self._done)) if bad else None

    def verify_all(self) -> None:
        """Wait until every piece is hashed (the loader may skip some bytes).

        Raises:
            PieceMismatch: a piece did not match.
            BaseException: a piece could not be read.
        """
        self._wait(range(len(self._done)))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._file.tell()
        count = max(0, min(view.nbytes, self._size - start))
        if count:
            first, last = start // self._piece_bytes, (start + count - 1) // self._piece_bytes
            self._wait(range(first, last + 1))
        return self._file.readinto(view[:count])  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        with self._cond:
            self._stopped = True
        for thread in self._threads:
            thread.join()
        self._file.close()
        super().close()
