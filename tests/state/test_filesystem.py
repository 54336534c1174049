"""The raw filesystem edge on a real ``tmp_path``: what is quiet about a missing path,
and how a whole copy is cut into calls."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import IO, Any

import pytest

from colabrun.state.filesystem import (
    SENDFILE_MAX_BYTES,
    OsFs,
    append_to,
    copy_by_writes,
    copy_whole,
    listdir_or_empty,
    read_ahead,
    read_all,
    rmdir_if_present,
    size_or_none,
    truncate_and_unlink,
)


def test_missing_paths_are_quiet(tmp_path: Path) -> None:
    fs = OsFs()
    gone = tmp_path / "gone"
    assert listdir_or_empty(fs, gone) == []
    assert size_or_none(fs, gone) is None
    truncate_and_unlink(fs, gone)
    rmdir_if_present(fs, gone)


def test_present_paths_are_read_and_removed(tmp_path: Path) -> None:
    fs = OsFs()
    folder = tmp_path / "folder"
    fs.makedirs(folder)
    append_to(fs, folder / "log", b"one\n")
    append_to(fs, folder / "log", b"two\n")
    assert read_all(fs, folder / "log") == b"one\ntwo\n"
    assert size_or_none(fs, folder / "log") == 8
    assert listdir_or_empty(fs, folder) == ["log"]
    truncate_and_unlink(fs, folder / "log")
    rmdir_if_present(fs, folder)
    assert not folder.exists()


def test_other_errors_are_not_swallowed(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        rmdir_if_present(OsFs(), tmp_path / "full")  # not empty
    with pytest.raises(NotADirectoryError):
        listdir_or_empty(OsFs(), tmp_path / "full" / "inside")


class _RecordingFs(OsFs):
    """Copies by reads and writes, recording each ``copy_range`` asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def copy_range(self, src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int:
        self.asked.append((offset, count))
        return copy_by_writes(src, dst, offset, count)


def test_a_whole_copy_is_a_first_chunk_then_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 1000)
    content = os.urandom(2500)
    (tmp_path / "src").write_bytes(content)
    fs = _RecordingFs()
    seen: list[int] = []
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        copied = copy_whole(fs, src, dst,
                            on_first_write=lambda: seen.append((tmp_path / "dst").stat().st_size))
    assert copied == 2500 and (tmp_path / "dst").read_bytes() == content
    assert seen == [1000]  # told once, with the first chunk flushed
    assert fs.asked == [(0, 1000), (1000, SENDFILE_MAX_BYTES), (2000, SENDFILE_MAX_BYTES),
                        (2500, SENDFILE_MAX_BYTES)]


def test_copy_by_writes_reads_at_an_offset_and_stops_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"0123456789")
    out = io.BytesIO()
    with open(tmp_path / "src", "rb") as src:
        assert copy_by_writes(src, out, 4, 3) == 3
        assert copy_by_writes(src, out, 10, 3) == 0
        assert src.tell() == 0  # pread: the position is left alone
    assert out.getvalue() == b"456"


def test_read_ahead_asks_for_the_whole_file_and_skips_what_has_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, at, n, advice: asked.append(
        (at, n, advice)), raising=False)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    with path.open("rb") as f:
        read_ahead(f)
    assert asked == [(0, 0, os.POSIX_FADV_WILLNEED)]
    read_ahead(io.BytesIO(b"in memory"))  # no descriptor: skipped, no error


class _FullAfterHalf(OsFs):
    """A disk that fills up part-way through the next append: half the bytes land, then
    ``ENOSPC``, as a Drive mount that ran out of quota mid-record."""

    def __init__(self) -> None:
        self.full = True

    def open(self, path: Path, mode: str) -> IO[bytes]:
        file = super().open(path, mode)
        fs = self

        class Filling(io.RawIOBase):
            def write(self, data: Any) -> int:
                if not fs.full:
                    return file.write(data)
                fs.full = False  # freed before the retry
                half = bytes(data[: len(data) // 2])
                file.write(half)
                raise OSError(errno.ENOSPC, "No space left on device")

            def seek(self, offset: int, whence: int = 0) -> int:
                return file.seek(offset, whence)

            def truncate(self, size: int | None = None) -> int:
                return file.truncate(size)

            def close(self) -> None:
                file.close()
                super().close()

        return Filling()  # type: ignore[return-value]


def test_an_append_that_fails_part_way_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n')
    fs = _FullAfterHalf()
    record = b'{"step": 2, "loss": 0.5, "time": 179.25}\n'
    with pytest.raises(OSError, match="No space left"):
        append_to(fs, path, record)
    assert path.read_bytes() == b'{"step": 1}\n', "no torn record"
    append_to(fs, path, record)  # the retry, once space is back
    assert path.read_bytes() == b'{"step": 1}\n' + record
