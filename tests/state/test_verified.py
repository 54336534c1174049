"""The verified read on in-memory files, with the piece hashing injected: what order
pieces are hashed in, and that a failure reaches the reader as itself."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest

from colabrun.state.verified import (
    PieceMismatch,
    SizeMismatch,
    VerifiedReader,
    consume_verified,
    consume_whole,
    usable_cpus,
)

CONTENT = bytes(i % 253 for i in range(5000))  # 5 pieces of 1000
PIECES = [hashlib.sha256(CONTENT[i:i + 1000]).hexdigest() for i in range(0, 5000, 1000)]


class _Closed(io.BytesIO):
    """An in-memory file that remembers it was closed."""

    was_closed = False

    def close(self) -> None:
        self.was_closed = True
        super().close()


def reader_of(content: bytes, *, hash_piece: Callable[[int], bytes] | None = None,
              first: tuple[int, ...] = (), file: io.BytesIO | None = None
              ) -> VerifiedReader:
    def from_content(index: int) -> bytes:
        return hashlib.sha256(content[index * 1000:(index + 1) * 1000]).digest()

    return VerifiedReader(file or io.BytesIO(content), size=5000, piece_bytes=1000,
                          pieces=PIECES, first=first, hash_piece=hash_piece or from_content)


def test_usable_cpus_is_at_least_one() -> None:
    assert usable_cpus() >= 1


def test_the_first_pieces_asked_for_are_hashed_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("colabrun.state.verified.usable_cpus", lambda: 1)  # one thread: in order
    order: list[int] = []
    threads: set[str] = set()

    def hash_piece(index: int) -> bytes:
        order.append(index)
        threads.add(threading.current_thread().name)
        return hashlib.sha256(CONTENT[index * 1000:(index + 1) * 1000]).digest()

    reader = reader_of(CONTENT, hash_piece=hash_piece, first=(0, 4, 9))
    assert consume_verified(reader, lambda f: f.read()) == CONTENT
    assert order == [0, 4, 1, 2, 3]  # 9 is no piece of this file
    assert threads == {"colabrun-hash"}  # hashed in the reader's own thread, not the caller's


def test_a_changed_piece_is_told_as_a_mismatch_not_as_what_the_loader_made_of_it() -> None:
    changed = bytearray(CONTENT)
    changed[2500] ^= 1

    def consume(file: Any) -> None:
        file.read()
        raise RuntimeError("the loader trips on its bytes")

    with pytest.raises(PieceMismatch, match="piece 3 of 5"):
        consume_verified(reader_of(bytes(changed)), consume)


def test_a_piece_that_cannot_be_read_fails_the_read_with_its_error() -> None:
    def hash_piece(index: int) -> bytes:
        raise OSError(5, "Input/output error")

    reader = reader_of(CONTENT, hash_piece=hash_piece)
    with pytest.raises(OSError, match="Input/output error"):
        consume_verified(reader, lambda f: f.read(10))


def test_the_consumers_own_error_passes_when_every_piece_matched() -> None:
    def consume(file: Any) -> None:
        raise KeyError("the consumer's")

    with pytest.raises(KeyError):
        consume_verified(reader_of(CONTENT), consume)


def test_a_file_of_the_wrong_size_is_refused_and_closed() -> None:
    file = _Closed(CONTENT[:4000])
    with pytest.raises(SizeMismatch, match="4000 bytes, 5000 expected"):
        reader_of(CONTENT, file=file)
    assert file.was_closed


def test_the_reader_closes_its_file() -> None:
    file = _Closed(CONTENT)
    consume_verified(reader_of(CONTENT, file=file), lambda f: f.read(1))
    assert file.was_closed


def test_a_file_of_one_piece_is_checked_whole_then_consumed_from_memory() -> None:
    digest = hashlib.sha256(b"payload").hexdigest()
    file = _Closed(b"payload")
    assert consume_whole(file, lambda f: f.read(), size=7, sha256=digest) == b"payload"
    assert file.was_closed
    with pytest.raises(SizeMismatch, match="8 bytes, 7 expected"):
        consume_whole(io.BytesIO(b"payload!"), lambda f: f.read(), size=7, sha256=digest)
    with pytest.raises(PieceMismatch, match="piece 1 of 1"):
        consume_whole(io.BytesIO(b"Payload"), lambda f: f.read(), size=7, sha256=digest)
