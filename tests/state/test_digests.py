"""Digests and the hashing writer, on in-memory files: each digest checked against one
computed independently with hashlib."""

from __future__ import annotations

import errno
import hashlib
import io
from typing import Any

import pytest

from colabrun.state.digests import (
    Digest,
    HashingWriter,
    Written,
    hash_list,
    piece_count,
    piece_sha256,
    sha256_of_file,
)


def pieces_of(content: bytes, piece: int) -> list[bytes]:
    return [content[i:i + piece] for i in range(0, len(content), piece)] or [b""]


@pytest.mark.parametrize(("size", "count"), [(0, 1), (1, 1), (1000, 1), (1001, 2), (3000, 3)])
def test_piece_count(size: int, count: int) -> None:
    assert piece_count(size, 1000) == count


@pytest.mark.parametrize("size", [0, 999, 1000, 2500])
def test_a_digest_in_pieces_is_the_hash_list_of_them(size: int) -> None:
    content = bytes(i % 251 for i in range(size))
    digest = Digest(1000)
    for i in range(0, size, 300):  # updates that straddle the pieces
        digest.update(content[i:i + 300])
    expected = [hashlib.sha256(p).digest() for p in pieces_of(content, 1000)]
    assert digest.size == size
    assert digest.pieces() == expected
    assert digest.hexdigest() == hash_list(expected)
    assert hash_list(expected) == hashlib.sha256(b"".join(expected)).hexdigest()


def test_a_whole_digest_is_the_plain_sha256_and_has_no_pieces() -> None:
    digest = Digest()
    digest.update(b"abc")
    digest.update(memoryview(bytearray(b"def")))
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
    assert digest.pieces() == [] and digest.size == 6


def test_the_writer_hashes_what_it_writes_and_tells_the_first_write_once() -> None:
    out = io.BytesIO()
    told: list[bytes] = []
    writer = HashingWriter(out, on_first_write=lambda: told.append(out.getvalue()),
                           piece_bytes=4)

    def produce(f: Any) -> None:
        f.write(b"abcde")
        f.write(b"fgh")

    writer.fill(produce)
    assert out.getvalue() == b"abcdefgh"
    assert told == [b"abcde"]
    written = writer.written()
    assert written == Written(8, hash_list([hashlib.sha256(b"abcd").digest(),
                                            hashlib.sha256(b"efgh").digest()]),
                              (hashlib.sha256(b"abcd").hexdigest(),
                               hashlib.sha256(b"efgh").hexdigest()))


class _FullFile(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_error_is_raised_as_itself_whatever_the_producer_made_of_it() -> None:
    def produce(f: Any) -> None:
        try:
            f.write(b"x")
        except OSError as exc:  # as torch.save does
            raise RuntimeError("[enforce fail at inline_container.cc]") from exc

    writer = HashingWriter(_FullFile())
    with pytest.raises(OSError) as info:
        writer.fill(produce)
    assert info.value.errno == errno.ENOSPC


def test_the_producers_own_error_passes() -> None:
    def produce(f: Any) -> None:
        raise KeyError("not the storage")

    with pytest.raises(KeyError):
        HashingWriter(io.BytesIO()).fill(produce)


def test_a_file_is_hashed_whole_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 7)
    content = bytes(range(100))
    assert sha256_of_file(io.BytesIO(content)) == Written(
        100, hashlib.sha256(content).hexdigest())


def test_a_piece_is_hashed_alone_and_a_shrunk_one_cannot_match(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 7)
    content = bytes(range(100))
    file = io.BytesIO(content)
    assert piece_sha256(file, 1, 40, 100) == hashlib.sha256(content[40:80]).digest()
    assert piece_sha256(file, 2, 40, 100) == hashlib.sha256(content[80:]).digest()
    shrunk = io.BytesIO(content[:90])
    assert piece_sha256(shrunk, 2, 40, 100) != hashlib.sha256(content[80:90]).digest()
    assert piece_sha256(shrunk, 2, 40, 100) != hashlib.sha256(content[80:]).digest()
