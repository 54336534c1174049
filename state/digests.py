"""Digests: the sha256 of a file, whole or as a hash list of its pieces.

A checkpoint's manifest records each file's digest (docs/colab.md#drive-pitfalls:
a Drive file may be torn, truncated or zeroed). Writing hashes what passes
through (:class:`HashingWriter`); hashing in pieces of :data:`HASH_PIECE_BYTES`
lets a resume verify the pieces on every core at once, where one sha256 runs on
one. Nothing here opens a file: the storage edge does, and hands the file over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from colabrun.state import filesystem

#: the pieces a checkpoint's payload is hashed in (see :class:`Digest`)
HASH_PIECE_BYTES = 64 * 1024 * 1024


def hash_list(digests: Iterable[bytes]) -> str:
    """The sha256 of the concatenated (raw) digests of a file's pieces, in order.

    Args:
        digests: each piece's raw sha256 digest.

    Returns:
        The hex digest a manifest records for the whole file.
    """
    return hashlib.sha256(b"".join(digests)).hexdigest()


def piece_count(size: int, piece_bytes: int) -> int:
    """How many pieces a ``size``-byte file has (an empty one: one empty piece).

    Args:
        size: the file's size.
        piece_bytes: the size of each piece but the last.

    Returns:
        At least 1.
    """
    return max(1, -(-size // piece_bytes))


class Digest:
    """The sha256 of a stream: of the whole (``piece_bytes=None``), or of its pieces.

    With ``piece_bytes``, the digest is a hash list, :func:`hash_list` of the
    sha256 of each ``piece_bytes`` piece (an empty stream is one empty piece).
    Writing costs the same; reading it back to verify can hash the pieces on
    every core at once (:meth:`colabrun.state.storage.Storage.read_verified`),
    where one sha256 runs on one (~1.1 GB/s here: most of a large checkpoint's
    resume time).
    """

    def __init__(self, piece_bytes: int | None = None) -> None:
        self.piece_bytes = piece_bytes
        self.size = 0
        self._whole = hashlib.sha256()
        self._hashes: dict[int, Any] = {}  # piece -> its sha256

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash the next bytes of the stream (a view of any format is taken as bytes)."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if self.piece_bytes is None:
            self._whole.update(view)
            self.size += view.nbytes
            return
        while view.nbytes:  # cut where pieces end
            index, within = divmod(self.size, self.piece_bytes)
            take = min(self.piece_bytes - within, view.nbytes)
            digest = self._hashes.get(index)
            if digest is None:
                digest = self._hashes[index] = hashlib.sha256()
            digest.update(view[:take])
            self.size += take
            view = view[take:]

    def pieces(self) -> list[bytes]:
        """The pieces' digests (none without ``piece_bytes``)."""
        if self.piece_bytes is None:
            return []
        return [(self._hashes.get(i) or hashlib.sha256()).digest()
                for i in range(piece_count(self.size, self.piece_bytes))]

    def hexdigest(self) -> str:
        """The stream's digest: its sha256, or with ``piece_bytes`` its hash list."""
        if self.piece_bytes is None:
            return self._whole.hexdigest()
        return hash_list(self.pieces())


@dataclass(frozen=True)
class Written:
    """What a streamed write produced: its size and sha256 (with pieces: their digests,
    hex, and the hash list of them)."""

    size_bytes: int
    sha256: str
    pieces: tuple[str, ...] = ()


class HashingWriter:
    """A write-only file object that hashes and counts what passes through.

    ``on_first_write`` is called once, after the first bytes went out: the
    file exists, partly written (what a kill "mid-upload" leaves).
    """

    def __init__(self, file: IO[bytes], on_first_write: Callable[[], None] | None = None,
                 piece_bytes: int | None = None) -> None:
        self._file = file
        self._hash = Digest(piece_bytes)
        self._on_first_write = on_first_write
        #: the first write error, kept because torch.save turns it into a RuntimeError
        self.error: OSError | None = None

    def fill(self, produce: Callable[[Any], None]) -> None:
        """Let ``produce(self)`` write; a write error is raised as itself.

        Raises:
            OSError: a write failed, whatever ``produce`` made of it.
            Exception: ``produce`` failed on its own.
        """
        try:
            produce(self)
        except Exception:
            if self.error is not None:  # the storage failed, not the producer
                raise self.error from None
            raise

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Hash ``data``, then write it; the bytes written."""
        view = memoryview(data)
        self._hash.update(view)
        try:
            written = self._file.write(view)
        except OSError as exc:
            self.error = self.error or exc
            raise
        if self._on_first_write is not None:
            self._file.flush()
            callback, self._on_first_write = self._on_first_write, None
            callback()
        return written

    def flush(self) -> None:
        """Flush the file underneath."""
        self._file.flush()

    def written(self) -> Written:
        """Size and digest of what was written so far."""
        return Written(self._hash.size, self._hash.hexdigest(),
                       tuple(d.hex() for d in self._hash.pieces()))


def sha256_of_file(file: IO[bytes]) -> Written:
    """Size and sha256 of the rest of an open file, read in chunks.

    Args:
        file: opened for reading.

    Returns:
        Its size and whole-file sha256 (no pieces).
    """
    digest = Digest()
    while chunk := file.read(filesystem.CHUNK_BYTES):
        digest.update(chunk)
    return Written(digest.size, digest.hexdigest())


def piece_sha256(file: IO[bytes], index: int, piece_bytes: int, size: int) -> bytes:
    """The raw sha256 of piece ``index`` of an open ``size``-byte file.

    Args:
        file: opened for reading (it is seeked).
        index: the piece, from 0.
        piece_bytes: the size of each piece but the last.
        size: the size the file should have.

    Returns:
        The digest; of a file that shrank meanwhile, one that cannot match.
    """
    digest = hashlib.sha256()
    left = max(0, min(piece_bytes, size - index * piece_bytes))
    file.seek(index * piece_bytes)
    while left and (chunk := file.read(min(filesystem.CHUNK_BYTES, left))):
        digest.update(chunk)
        left -= len(chunk)
    if left:  # the file shrank meanwhile: what was read cannot match
        digest.update(b"\0truncated")
    return digest.digest()
