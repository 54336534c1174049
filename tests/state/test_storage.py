"""The storage edge on a real ``tmp_path``, with one syscall made to fail at the ``Fs`` seam.

:class:`FailingFs` is the fault double the state-file and checkpoint tests share.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest
import torch

from colabrun.jobs.errors import StorageError, StorageTimeout
from colabrun.runner.clock import FakeClock
from colabrun.state.filesystem import OsFs, copy_by_writes
from colabrun.state.storage import Storage
from colabrun.state.verified import PieceMismatch


class _FailingFile:
    """A real file whose ``write`` goes through the fault double first."""

    def __init__(self, fs: FailingFs, path: Path, raw: IO[bytes]) -> None:
        self._fs = fs
        self._path = path
        self._raw = raw

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._fs.check("write", self._path):  # a torn write: half lands, then the error
            self._raw.write(view[: len(view) // 2])
            self._fs.fail(self._path)
        return self._raw.write(view)

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class FailingFs(OsFs):
    """The real filesystem, except that calls ``nth`` .. ``nth + times - 1`` of ``method``
    (counting only paths containing ``match``) fail with ``OSError(err)``, or block on
    ``hang`` until the test sets it.

    ``method`` is an :class:`colabrun.state.filesystem.Fs` method name, or ``"write"`` for a write
    to a file opened for writing (which lands half its bytes, then fails). Every call
    is recorded in :attr:`calls` as ``(method, path)``.
    """

    def __init__(
        self,
        method: str | None = None,
        *,
        err: int = errno.EIO,
        nth: int = 1,
        times: int = 1,
        match: str | None = None,
        hang: threading.Event | None = None,
    ) -> None:
        self.method = method
        self.err = err
        self.nth = nth
        self.times = times
        self.match = match
        self.hang = hang
        self.calls: list[tuple[str, Path]] = []
        self.counts: Counter[str] = Counter()

    def check(self, method: str, path: Path) -> bool:
        """Record a call; whether it is one that must fail."""
        self.calls.append((method, Path(path)))
        if method != self.method or (self.match is not None and self.match not in str(path)):
            return False
        self.counts[method] += 1
        return self.nth <= self.counts[method] < self.nth + self.times

    def fail(self, path: Path) -> None:
        if self.hang is not None:
            self.hang.wait()
            return
        raise OSError(self.err, os.strerror(self.err), str(path))

    def _maybe_fail(self, method: str, path: Path) -> None:
        if self.check(method, path):
            self.fail(path)

    def open(self, path: Path, mode: str) -> IO[bytes]:
        self._maybe_fail("open", path)
        raw = super().open(path, mode)
        if "r" in mode:
            return raw
        return _FailingFile(self, path, raw)  # type: ignore[return-value]

    def copy_range(self, src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int:
        return copy_by_writes(src, dst, offset, count)  # through the failing file's write

    def fsync(self, file: IO[bytes]) -> None:
        self._maybe_fail("fsync", Path(file.name))
        super().fsync(file)

    def fsync_dir(self, path: Path) -> None:
        self._maybe_fail("fsync_dir", path)
        super().fsync_dir(path)

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe_fail("replace", src)
        super().replace(src, dst)

    def listdir(self, path: Path) -> list[str]:
        self._maybe_fail("listdir", path)
        return super().listdir(path)

    def stat_size(self, path: Path) -> int:
        self._maybe_fail("stat_size", path)
        return super().stat_size(path)

    def makedirs(self, path: Path) -> None:
        self._maybe_fail("makedirs", path)
        super().makedirs(path)

    def truncate(self, path: Path) -> None:
        self._maybe_fail("truncate", path)
        super().truncate(path)

    def unlink(self, path: Path) -> None:
        self._maybe_fail("unlink", path)
        super().unlink(path)

    def rmdir(self, path: Path) -> None:
        self._maybe_fail("rmdir", path)
        super().rmdir(path)


def storage_with(fs: FailingFs | None = None, *, slept: list[float] | None = None,
                 **kwargs: Any) -> Storage:
    """A storage whose backoff never really sleeps (recorded in ``slept`` when given)."""
    sleep = slept.append if slept is not None else FakeClock().sleep
    return Storage(fs, sleep=sleep, **{"backoff_s": 0.01, **kwargs})


# -- retries -----------------------------------------------------------------------


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT])
def test_transient_error_on_first_two_tries_is_retried_with_growing_backoff(
    tmp_path: Path, err: int
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    fs = FailingFs("open", err=err, times=2)
    slept: list[float] = []

    assert storage_with(fs, slept=slept).read_bytes(path) == b"payload"

    assert fs.counts["open"] == 3
    assert len(slept) == 2
    assert slept[1] > slept[0] > 0
    assert slept == pytest.approx([0.01, 0.02])


def test_backoff_is_exponential_over_many_tries(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    slept: list[float] = []

    storage_with(FailingFs("stat_size", times=4), slept=slept, attempts=5).size_of(path)

    assert slept == pytest.approx([0.01, 0.02, 0.04, 0.08])


def test_exhausting_retries_says_how_many_tries(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    fs = FailingFs("open", err=errno.ENOTCONN, times=99)

    with pytest.raises(StorageError) as info:
        storage_with(fs, attempts=3).read_bytes(path)

    assert fs.counts["open"] == 3
    message = str(info.value)
    assert "after 3 tries" in message
    assert str(path) in message
    assert "mount" in message  # the hint for a dying Drive mount
    assert info.value.errno == errno.ENOTCONN
    assert isinstance(info.value, OSError)


def test_missing_file_is_not_retried_and_names_path_and_hint(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.bin"
    fs = FailingFs()
    slept: list[float] = []

    with pytest.raises(StorageError) as info:
        storage_with(fs, slept=slept).read_bytes(path)

    assert [m for m, _ in fs.calls] == ["open"]
    assert slept == []
    message = str(info.value)
    assert str(path) in message
    assert "check the path" in message
    assert "tries" not in message
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_permission_error_is_not_retried_and_suggests_another_root(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    fs = FailingFs("open", err=errno.EACCES, times=99)
    slept: list[float] = []

    with pytest.raises(StorageError) as info:
        storage_with(fs, slept=slept).write_bytes(path, b"data")

    assert fs.counts["open"] == 1
    assert slept == []
    assert info.value.errno == errno.EACCES
    assert str(path) in str(info.value)
    assert "--root" in str(info.value)


def test_disk_full_is_not_retried_and_says_so(tmp_path: Path) -> None:
    fs = FailingFs("write", err=errno.ENOSPC, times=99)

    with pytest.raises(StorageError) as info:
        storage_with(fs).write_bytes(tmp_path / "f.bin", b"data")

    assert fs.counts["write"] == 1
    assert info.value.errno == errno.ENOSPC
    assert "full" in str(info.value)


# -- timeouts ----------------------------------------------------------------------


def test_hanging_call_raises_storage_timeout_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    release = threading.Event()
    fs = FailingFs("stat_size", hang=release, times=99)
    try:
        start = time.monotonic()
        with pytest.raises(StorageTimeout) as info:
            storage_with(fs, timeout_s=0.2).size_of(path)
        elapsed = time.monotonic() - start
    finally:
        release.set()

    assert 0.2 <= elapsed < 1.0
    assert fs.counts["stat_size"] == 1  # a hang is not retried: it would only hang again
    assert isinstance(info.value, StorageError)
    assert isinstance(info.value, TimeoutError)
    assert str(path) in str(info.value)


def test_a_call_after_a_hung_one_is_not_held_up_by_it(tmp_path: Path) -> None:
    """A call stuck in a frozen mount keeps its thread, and the next call, once the
    mount answers, runs at once."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"xyz")
    release = threading.Event()
    fs = FailingFs("stat_size", hang=release, times=1)
    storage = storage_with(fs, timeout_s=0.2)
    try:
        with pytest.raises(StorageTimeout):
            storage.size_of(path)
        start = time.monotonic()
        assert storage.size_of(path) == 3  # the first call still hangs
        assert time.monotonic() - start < 0.2
    finally:
        release.set()


def test_hanging_write_raises_storage_timeout(tmp_path: Path) -> None:
    release = threading.Event()
    fs = FailingFs("fsync", hang=release)
    try:
        with pytest.raises(StorageTimeout):
            storage_with(fs, timeout_s=0.2).write_bytes(tmp_path / "f.bin", b"data")
    finally:
        release.set()


def test_a_batch_runs_its_calls_in_one_thread_each_with_its_retries(tmp_path: Path) -> None:
    """Committing an upload: ~10 calls, one handoff to a thread and back, not one each."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"xyz")
    seen: list[tuple[threading.Thread, str]] = []
    slept: list[float] = []
    storage = storage_with(FailingFs("stat_size", times=1), slept=slept, timeout_s=5.0)

    def record() -> None:
        seen.append((threading.current_thread(), threading.current_thread().name))

    def calls() -> int:
        storage.call("stat", path, record)
        size = storage.size_of(path)  # fails once, retried in place
        storage.call("stat", path, record)
        return size

    assert storage.batch("upload", path, calls) == 3
    assert slept == pytest.approx([0.01])
    (first, name), (second, _) = seen
    assert first is second is not threading.current_thread(), "the calls ran in the batch's"
    assert name == "colabrun-io-upload", "an upload's passes are the root's (runner/faults.py)"


def test_a_slow_batch_is_timed_call_by_call(tmp_path: Path) -> None:
    """A root slow but alive: each call has its limit from its own start, not the whole."""
    storage = storage_with(FailingFs("stat_size", times=0), timeout_s=0.2)

    def calls() -> str:
        for _ in range(3):
            storage.call("stat", tmp_path, lambda: time.sleep(0.12))
        return "done"

    assert storage.batch("upload", tmp_path, calls) == "done"  # 0.36 s in all


def test_once_a_call_of_a_batch_hangs_the_rest_is_not_made(tmp_path: Path) -> None:
    release = threading.Event()
    made: list[str] = []
    storage = storage_with(FailingFs("stat_size", times=0), timeout_s=0.2)

    def calls() -> None:
        storage.call("write", tmp_path, lambda: release.wait(10))
        made.append("rename")  # never: the call after the hung one is refused
        storage.call("rename", tmp_path, lambda: made.append("renamed"))

    start = time.monotonic()
    try:
        with pytest.raises(StorageTimeout):
            storage.batch("upload", tmp_path, calls)
        assert 0.2 <= time.monotonic() - start < 1.0
    finally:
        release.set()
    deadline = time.monotonic() + 5.0
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made == ["rename"], "the batch went on, but its next call was refused"


# -- writes ------------------------------------------------------------------------


def test_write_stream_returns_size_and_sha256_of_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    parts = [b"a" * 1000, bytearray(b"\x00\x01\x02"), memoryview(b"tail" * 77)]

    def produce(f: Any) -> None:
        for part in parts:
            f.write(part)

    written = storage_with().write_stream(path, produce)

    content = path.read_bytes()
    assert content == b"".join(bytes(p) for p in parts)
    assert written.size_bytes == len(content)
    assert written.sha256 == hashlib.sha256(content).hexdigest()


def hash_list_of(content: bytes, piece: int) -> str:
    """A hash list computed independently: sha256 over the pieces' sha256 digests."""
    pieces = [content[i:i + piece] for i in range(0, len(content), piece)] or [b""]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pieces)).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 3500])
@pytest.mark.parametrize("cpus", [1, 3])
def test_a_write_hashed_in_pieces_and_its_parallel_rehash_agree(
    tmp_path: Path, size: int, cpus: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.verified.usable_cpus", lambda: cpus)  # hashing threads
    path = tmp_path / "f.bin"
    content = bytes(range(256)) * (size // 256) + bytes(size % 256)

    def produce(f: Any) -> None:
        for i in range(0, len(content), 300):  # writes that straddle the pieces
            f.write(content[i:i + 300])

    storage = storage_with()
    written = storage.write_stream(path, produce, piece_bytes=1000)

    assert written.size_bytes == size
    assert written.sha256 == hash_list_of(content, 1000)
    assert written.pieces == tuple(hashlib.sha256(content[i:i + 1000]).hexdigest()
                                   for i in range(0, max(size, 1), 1000))
    # the pieces rehashed in parallel agree, and the file reads back whole
    assert storage.read_verified(path, lambda f: f.read(), size=size, piece_bytes=1000,
                                 pieces=written.pieces) == content
    assert storage.sha256_of(path).sha256 == hashlib.sha256(content).hexdigest()


def test_a_hash_list_accepts_views_of_any_format(tmp_path: Path) -> None:
    values = torch.arange(600, dtype=torch.float32)
    written = storage_with().write_stream(
        tmp_path / "f.bin", lambda f: f.write(memoryview(values.numpy())), piece_bytes=1000)
    assert written.sha256 == hash_list_of(values.numpy().tobytes(), 1000)


class _ThreadRecordingFs(OsFs):
    """Holds each hashing thread at its first read until ``threads`` of them are reading
    at once (a timeout fails the read: fewer ran in parallel)."""

    def __init__(self, threads: int) -> None:
        self.hashers: set[threading.Thread] = set()  # held: no object reused
        self._together = threading.Barrier(threads)

    def open(self, path: Path, mode: str) -> IO[bytes]:
        thread = threading.current_thread()
        if "r" in mode and thread.name == "colabrun-hash" and thread not in self.hashers:
            self.hashers.add(thread)
            self._together.wait(timeout=10)
        return super().open(path, mode)


def test_the_pieces_are_hashed_on_several_threads_and_any_changed_byte_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.verified.usable_cpus", lambda: 3)
    path = tmp_path / "f.bin"
    content = bytearray(b"x" * 5000)
    path.write_bytes(content)
    pieces = [hashlib.sha256(content[i:i + 1000]).hexdigest() for i in range(0, 5000, 1000)]
    fs = _ThreadRecordingFs(threads=3)
    storage = storage_with(fs)  # type: ignore[arg-type]
    storage.read_verified(path, lambda f: None, size=5000, piece_bytes=1000, pieces=pieces)
    assert len(fs.hashers) == 3
    for at in (0, 1500, 4999):
        changed = bytearray(content)
        changed[at] ^= 1
        path.write_bytes(changed)
        with pytest.raises(PieceMismatch, match=f"piece {at // 1000 + 1} of 5"):
            storage.read_verified(path, lambda f: None, size=5000, piece_bytes=1000,
                                  pieces=pieces)


def test_torn_transient_write_is_redone_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    fs = FailingFs("write", err=errno.EIO, nth=2)  # the second chunk tears

    def produce(f: Any) -> None:
        for i in range(4):
            f.write(bytes([i]) * 100)

    written = storage_with(fs).write_stream(path, produce)

    expected = b"".join(bytes([i]) * 100 for i in range(4))
    assert path.read_bytes() == expected  # not the torn first try followed by the second
    assert written.size_bytes == len(expected)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()


def test_torch_save_through_write_stream_matches_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"

    written = storage_with().write_stream(path, lambda f: torch.save({"w": torch.arange(50)}, f))

    assert written.size_bytes == path.stat().st_size
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(50))


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_torch_save_failing_mid_write_surfaces_as_storage_error(tmp_path: Path, err: int) -> None:
    """torch.save swallows the writer's OSError into a RuntimeError; the edge must not."""
    path = tmp_path / "t.pt"
    fs = FailingFs("write", err=err, nth=2, times=99)

    with pytest.raises(StorageError) as info:
        storage_with(fs, attempts=2).write_stream(
            path, lambda f: torch.save({"w": torch.arange(5000)}, f)
        )

    assert info.value.errno == err


def test_torch_save_with_one_transient_failure_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    fs = FailingFs("write", err=errno.EIO, nth=2)

    written = storage_with(fs).write_stream(path, lambda f: torch.save({"w": torch.arange(9)}, f))

    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(9))


def test_append_read_replace_makedirs(tmp_path: Path) -> None:
    storage = storage_with()
    folder = tmp_path / "a" / "b"
    storage.makedirs(folder)
    storage.makedirs(folder)  # idempotent
    storage.append_bytes(folder / "log", b"one\n")
    storage.append_bytes(folder / "log", b"two\n")
    storage.replace(folder / "log", folder / "log2")
    storage.fsync_dir(folder)

    assert storage.read_bytes(folder / "log2") == b"one\ntwo\n"
    assert storage.listdir(folder) == ["log2"]
    assert storage.sha256_of(folder / "log2").sha256 == hashlib.sha256(b"one\ntwo\n").hexdigest()


# -- missing things ----------------------------------------------------------------


def test_listdir_of_missing_folder_is_empty(tmp_path: Path) -> None:
    assert storage_with().listdir(tmp_path / "nope") == []


def test_size_of_missing_is_none_and_of_present_is_its_size(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    storage = storage_with()

    assert storage.size_of(tmp_path / "nope") is None
    assert storage.size_of(tmp_path / "f") == 5


# -- deleting ----------------------------------------------------------------------


def test_discard_file_truncates_before_unlinking(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 4096)
    fs = FailingFs()

    storage_with(fs).discard_file(path)

    assert fs.calls == [("truncate", path), ("unlink", path)]
    assert not path.exists()


def test_discard_file_that_cannot_be_unlinked_is_already_empty(tmp_path: Path) -> None:
    """Truncation first: a failed delete frees the space too (docs/colab.md#drive-pitfalls)."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 4096)

    with pytest.raises(StorageError):
        storage_with(FailingFs("unlink", err=errno.EACCES)).discard_file(path)

    assert path.stat().st_size == 0


def test_discard_file_of_missing_file_is_quiet(tmp_path: Path) -> None:
    storage_with().discard_file(tmp_path / "gone")


def test_discard_tree_removes_manifest_first_then_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.pt", "state.pt", "z.json"):
        (folder / name).write_bytes(b"data")
    (folder / "manifest.json").write_bytes(b"{}")
    (folder / "sub" / "inner").write_bytes(b"inner")
    fs = FailingFs()

    storage_with(fs).discard_tree(folder)

    assert not folder.exists()
    removals = [(m, p) for m, p in fs.calls if m in ("truncate", "unlink", "rmdir")]
    assert removals[0] == ("truncate", folder / "manifest.json")
    assert removals[1] == ("unlink", folder / "manifest.json")
    assert removals[-1] == ("rmdir", folder)
    for i, (method, path) in enumerate(removals):
        if method == "unlink":
            assert removals[i - 1] == ("truncate", path), f"{path} unlinked without truncation"


def test_discard_tree_of_missing_folder_is_quiet(tmp_path: Path) -> None:
    storage_with().discard_tree(tmp_path / "gone")


def test_local_staging_commits_without_fsync(tmp_path: Path) -> None:
    """The staging store outlives a dead worker in the page cache, and dies with the
    machine whatever fsync did: it never pays for fsync. The root's store does."""
    from colabrun.state.checkpoints import CheckpointStore
    from colabrun.state.jobdir import JobDir

    job = JobDir(tmp_path / "root", "job", local_root=tmp_path / "local")
    fs = FailingFs()
    local = CheckpointStore(job.local.dir.parent, Storage(fs=fs, timeout_s=None,
                                                          durable=job.local.storage.durable))
    local.commit({"w": 1}, step=1, epoch=0, batch=1, generation=1, created_at=0.0, meta={})
    assert [m for m, _ in fs.calls if m.startswith("fsync")] == []
    root_fs = FailingFs()
    CheckpointStore(tmp_path / "root", Storage(fs=root_fs)).commit(
        {"w": 1}, step=1, epoch=0, batch=1, generation=1, created_at=0.0, meta={})
    assert {m for m, _ in root_fs.calls if m.startswith("fsync")} == {"fsync", "fsync_dir"}


def _sendfile_counted(monkeypatch: pytest.MonkeyPatch, fail: int | None = None) -> list[int]:
    """Count the bytes ``os.sendfile`` copies (or make it fail with ``fail``)."""
    copied: list[int] = []
    real = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        if fail is not None:
            raise OSError(fail, os.strerror(fail))
        copied.append(real(out_fd, in_fd, offset, count))
        return copied[-1]

    monkeypatch.setattr("colabrun.state.filesystem.os.sendfile", sendfile)
    return copied


@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 17])
def test_copy_file_copies_in_the_kernel_and_tells_when_it_began(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 1024 * 1024)
    copied = _sendfile_counted(monkeypatch)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(size))
    seen_at_first_write: list[int] = []

    total = storage_with().copy_file(src, dst, on_first_write=lambda: seen_at_first_write.append(
        dst.stat().st_size))

    assert total == size == sum(copied) and dst.read_bytes() == src.read_bytes()
    assert seen_at_first_write == [min(size, 1024 * 1024)]  # partly written, once


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.ENOTSOCK, None])  # None: no sendfile
def test_copy_file_falls_back_to_reads_and_writes_where_sendfile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int | None
) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 1000)
    if refusal is None:
        monkeypatch.delattr("colabrun.state.filesystem.os.sendfile")
    else:
        _sendfile_counted(monkeypatch, fail=refusal)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(3500))
    assert storage_with().copy_file(src, dst) == 3500
    assert dst.read_bytes() == src.read_bytes()


def test_a_copy_torn_by_a_transient_error_is_redone_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("colabrun.state.filesystem.CHUNK_BYTES", 1024 * 1024)
    fs = FailingFs("write", err=errno.EIO, nth=2)  # the second write lands half, then fails
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    assert storage_with(fs).copy_file(src, dst) == 3 * 1024 * 1024
    assert dst.read_bytes() == src.read_bytes()
    assert fs.counts["write"] == 2 + 3  # two (the second torn), then all three again


def test_a_copy_meets_an_error_sendfile_cannot_route_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sendfile_counted(monkeypatch, fail=errno.ENOSPC)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100)
    with pytest.raises(StorageError, match="ENOSPC|No space"):
        storage_with().copy_file(src, tmp_path / "dst.bin")
