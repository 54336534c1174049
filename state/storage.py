"""The one edge through which every byte of the root folder passes.

:class:`Storage` wraps a raw filesystem (:class:`Fs`, by default the real one)
with two things a Drive mount needs (docs/colab.md#drive-pitfalls):

* **retries** with exponential backoff (tenacity) for transient errors:
  ``EIO``, ``ENOTCONN`` (107, "Transport endpoint is not connected"),
  ``ETIMEDOUT``, ``EAGAIN``;
* a **timeout** on every call, because a dying mount can also hang: the call
  runs in a daemon thread, and if it has not returned in time the caller gets
  :class:`StorageTimeout` (the stuck thread is abandoned; nothing else can be
  done to a thread blocked in the kernel).

After the last try the error is translated into :class:`StorageError`, whose
message names the path, the errno and what to check. The :class:`Fs` seam is
where tests inject faults.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from colabrun.jobs.errors import StorageError, StorageTimeout

T = TypeVar("T")

TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN})
#: what ``sendfile`` fails with where a filesystem (or, ENOTSOCK, macOS) cannot copy files
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP,
                          errno.ENOTSOCK})

CHUNK_BYTES = 8 * 1024 * 1024
#: the most one ``sendfile`` call copies (Linux's own limit is just under 2 GiB)
SENDFILE_MAX_BYTES = 1 << 30
#: the pieces a checkpoint's payload is hashed in (see :class:`Digest`)
HASH_PIECE_BYTES = 64 * 1024 * 1024


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying (a flaky mount, not a wrong path)."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


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
    """Copy up to ``count`` bytes of ``src`` from ``offset`` with one ``dst.write``;
    the bytes copied (0: the end of ``src``)."""
    data = os.pread(src.fileno(), min(count, CHUNK_BYTES), offset)
    if data:
        dst.write(data)
    return len(data)


class OsFs:
    """The real filesystem."""

    def open(self, path: Path, mode: str) -> IO[bytes]:
        return open(path, mode)  # noqa: SIM115 - the caller closes it

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


def hash_list(digests: Iterable[bytes]) -> str:
    """The sha256 of the concatenated (raw) digests of a file's pieces, in order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


class Digest:
    """The sha256 of a stream: of the whole (``piece_bytes=None``), or of its pieces.

    With ``piece_bytes``, the digest is a hash list, :func:`hash_list` of the
    sha256 of each ``piece_bytes`` piece (an empty stream is one empty piece).
    Writing costs the same; reading it back to verify can hash the pieces on
    every core at once (:meth:`Storage.read_verified`), where one sha256 runs on
    one (~1.1 GB/s here: most of a large checkpoint's resume time).
    """

    def __init__(self, piece_bytes: int | None = None) -> None:
        self.piece_bytes = piece_bytes
        self.size = 0
        self._whole = hashlib.sha256()
        self._hashes: dict[int, Any] = {}  # piece -> its sha256

    def update(self, data: bytes | bytearray | memoryview) -> None:
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
        if self.piece_bytes is None:
            return self._whole.hexdigest()
        return hash_list(self.pieces())


def piece_count(size: int, piece_bytes: int) -> int:
    """How many pieces a ``size``-byte file has (an empty one: one empty piece)."""
    return max(1, -(-size // piece_bytes))


def usable_cpus() -> int:
    """The CPUs this process may run on."""
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


class _VerifiedReader(io.RawIOBase):
    """A file read as it is verified: it returns bytes only from pieces whose sha256
    matched, and waits for the others.

    The pieces are hashed on every CPU, ``first`` ones first (a zip archive, as
    ``torch.save`` writes, is read from its end first), then in order; the
    reader follows them. Verifying and loading a checkpoint so overlap, yet no
    unverified byte reaches the loader.
    """

    def __init__(self, storage: Storage, path: Path, *, size: int, piece_bytes: int,
                 pieces: Sequence[str], first: Sequence[int] = ()) -> None:
        super().__init__()
        self._storage, self._path, self._size, self._piece_bytes = storage, path, size, piece_bytes
        self._expected = list(pieces)
        count = len(self._expected)
        self._order = [*dict.fromkeys(i for i in first if 0 <= i < count),
                       *(i for i in range(count) if i not in first)]
        self._done: list[bool | None] = [None] * count  # None: not hashed yet
        self._error: BaseException | None = None  # a piece could not be read
        self._next = 0
        self._stopped = False
        self._cond = threading.Condition()
        self._file = storage.fs.open(path, "rb")
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
        with self._storage.counting_cpu():
            self._hash_next_pieces()

    def _hash_next_pieces(self) -> None:
        while True:
            with self._cond:
                if self._stopped or self._next == len(self._order):
                    return
                index = self._order[self._next]
                self._next += 1
            try:
                good = self._storage.piece_digest(
                    self._path, index, self._piece_bytes, self._size).hex() == self._expected[index]
            except BaseException as exc:  # raised to the reader
                with self._cond:
                    self._error = self._error or exc
                good = False
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
        """Wait until every piece is hashed (the loader may skip some bytes)."""
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


@dataclass(frozen=True)
class Written:
    """What a streamed write produced: its size and sha256 (with pieces: their digests,
    hex, and the hash list of them)."""

    size_bytes: int
    sha256: str
    pieces: tuple[str, ...] = ()


class _HashingWriter:
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

    def write(self, data: bytes | bytearray | memoryview) -> int:
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
        self._file.flush()

    @property
    def size(self) -> int:
        return self._hash.size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def pieces(self) -> tuple[str, ...]:
        return tuple(d.hex() for d in self._hash.pieces())


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
        #: CPU seconds spent by the calls' own threads (see :meth:`cpu_s`)
        self._io_cpu_s = 0.0
        self._io_cpu_lock = threading.Lock()
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.bytes_per_s = bytes_per_s
        self.backoff_s = backoff_s
        self._sleep = sleep

    # -- the two wrappers every call goes through ---------------------------------

    def call(self, what: str, path: Path, fn: Callable[[], T], *, timeout_s: float | None = None
             ) -> T:
        """Run ``fn`` with retries on transient errors and a timeout per try.

        Raises:
            StorageTimeout: one try did not return in time.
            StorageError: the last try failed with an ``OSError``.
        """
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=10 * self.backoff_s),
            reraise=True,
            sleep=self._sleep or time.sleep,
        )
        # no limit at all without a per-call timeout; else the call's own, or the default
        limit = None if self.timeout_s is None else (
            self.timeout_s if timeout_s is None else timeout_s)
        try:
            result: T = (retrying(fn) if limit is None
                         else retrying(self._with_timeout, what, path, fn, limit))
            return result
        except StorageError:
            raise
        except OSError as exc:
            raise _translate(what, path, exc, tries=self.attempts) from exc

    def cpu_s(self) -> float:
        """CPU seconds of the calling thread plus those all calls ran in their own
        threads: what a sequence of calls cost, as a difference of two readings."""
        return time.thread_time() + self._io_cpu_s

    @property
    def io_cpu_s(self) -> float:
        """CPU seconds of the threads calls ran in, and of those they started."""
        return self._io_cpu_s

    @contextmanager
    def counting_cpu(self) -> Iterator[None]:
        """Add the CPU time the calling thread spends inside to :meth:`cpu_s` (for the
        threads storage calls start: their own, and those hashing pieces)."""
        started = time.thread_time()
        try:
            yield
        finally:
            with self._io_cpu_lock:
                self._io_cpu_s += time.thread_time() - started

    def _with_timeout(self, what: str, path: Path, fn: Callable[[], T], limit: float) -> T:
        box: dict[str, Any] = {}

        def target() -> None:
            with self.counting_cpu():
                try:
                    box["value"] = fn()
                except BaseException as exc:  # handed back to the caller below
                    box["error"] = exc

        thread = threading.Thread(target=target, name=f"colabrun-io-{what}", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            raise StorageTimeout(
                f"{what} {path} did not finish within {limit:g} s; the storage may be hanging "
                "(on Colab: is Google Drive still mounted? try `ls /content/drive/MyDrive`)"
            )
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

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
        ``produce`` must be repeatable. ``piece_bytes``: return the :class:`Digest`
        of pieces of this size.
        """

        def attempt() -> Written:
            with self.fs.open(path, "wb") as raw:
                writer = _HashingWriter(raw, on_first_write, piece_bytes)
                try:
                    produce(writer)
                except Exception:
                    if writer.error is not None:  # the storage failed, not the producer
                        raise writer.error from None
                    raise
                self._settle(raw)
            return Written(writer.size, writer.sha256, writer.pieces)

        return self.call("write", path, attempt, timeout_s=self._bulk_timeout(expected_bytes))

    def copy_file(self, src: Path, dst: Path, *, expected_bytes: int = 0,
                  on_first_write: Callable[[], None] | None = None,
                  src_fs: Fs | None = None) -> int:
        """Copy ``src`` (a local file, opened with ``src_fs``, by default this storage's
        filesystem) to ``dst``, in the kernel where it can (:meth:`Fs.copy_range`), and
        fsync; return the bytes copied. Retried whole."""

        def attempt() -> int:
            with (src_fs or self.fs).open(src, "rb") as source, \
                    self.fs.open(dst, "wb") as target:
                # a first chunk alone: on_first_write sees a partly written file
                copied = self.fs.copy_range(source, target, 0, CHUNK_BYTES)
                if on_first_write is not None:
                    target.flush()
                    on_first_write()
                while more := self.fs.copy_range(source, target, copied, SENDFILE_MAX_BYTES):
                    copied += more
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

        def attempt() -> None:
            with self.fs.open(path, "ab") as f:
                f.write(data)

        self.call("append", path, attempt)

    def read_bytes(self, path: Path) -> bytes:
        """The whole content of ``path``."""

        def attempt() -> bytes:
            with self.fs.open(path, "rb") as f:
                return f.read()

        return self.call("read", path, attempt)

    def sha256_of(self, path: Path, *, expected_bytes: int = 0) -> Written:
        """Size and sha256 of ``path``, read in chunks."""

        def attempt() -> Written:
            digest = hashlib.sha256()
            size = 0
            with self.fs.open(path, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
            return Written(size, digest.hexdigest())

        return self.call("read", path, attempt, timeout_s=self._bulk_timeout(expected_bytes))

    def piece_digest(self, path: Path, index: int, piece_bytes: int, size: int) -> bytes:
        """The sha256 of piece ``index`` of a ``size``-byte file (raw; not retried: for
        callers inside :meth:`call`)."""
        digest = hashlib.sha256()
        left = max(0, min(piece_bytes, size - index * piece_bytes))
        with self.fs.open(path, "rb") as f:
            f.seek(index * piece_bytes)
            while left and (chunk := f.read(min(CHUNK_BYTES, left))):
                digest.update(chunk)
                left -= len(chunk)
        if left:  # the file shrank meanwhile: what was read cannot match
            digest.update(b"\0truncated")
        return digest.digest()

    def read_verified(self, path: Path, consume: Callable[[IO[bytes]], T], *, size: int,
                      piece_bytes: int, pieces: Sequence[str], first: Sequence[int] = ()) -> T:
        """``consume(file)`` while the file's pieces are verified on every CPU: it reads
        only bytes of pieces that matched ``pieces``, and returns only once all did. A
        file of one piece is read whole, checked, and consumed from memory: nothing to
        overlap, and no threads to start (a 0.3 MB checkpoint loads in ~2.6 ms, not ~5).

        Raises:
            SizeMismatch: the file is not ``size`` bytes long.
            PieceMismatch: a piece does not match (whatever ``consume`` made of it).
            StorageError: the file could not be read, even after retries.
        """

        def whole() -> T:  # one piece: nothing to overlap; read it at once, from memory
            with self.fs.open(path, "rb") as f:
                data = f.read(size + 1)
            if len(data) != size:
                raise SizeMismatch(len(data), size)
            if hashlib.sha256(data).hexdigest() != pieces[0]:
                raise PieceMismatch(0, 1)
            return consume(io.BytesIO(data))

        def attempt() -> T:
            reader = _VerifiedReader(self, path, size=size, piece_bytes=piece_bytes,
                                     pieces=pieces, first=first)
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

        return self.call("read", path, whole if len(pieces) == 1 else attempt,
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

        def attempt() -> list[str]:
            try:
                return self.fs.listdir(path)
            except FileNotFoundError:
                return []

        return self.call("list", path, attempt)

    def size_of(self, path: Path) -> int | None:
        """Size of ``path`` in bytes, or ``None`` when it does not exist."""

        def attempt() -> int | None:
            try:
                return self.fs.stat_size(path)
            except FileNotFoundError:
                return None

        return self.call("stat", path, attempt)

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its parents if missing."""
        self.call("mkdir", path, lambda: self.fs.makedirs(path))

    def discard_file(self, path: Path) -> None:
        """Truncate then delete ``path``: a deleted Drive file still counts
        against the quota from the Trash for 30 days (docs/colab.md#drive-pitfalls)."""

        def attempt() -> None:
            try:
                self.fs.truncate(path)
                self.fs.unlink(path)
            except FileNotFoundError:
                pass

        self.call("delete", path, attempt)

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

        def remove_dir() -> None:
            try:
                self.fs.rmdir(path)
            except FileNotFoundError:
                pass

        self.call("rmdir", path, remove_dir)


def _translate(what: str, path: Path, exc: OSError, *, tries: int) -> StorageError:
    hint = "check the path and its permissions"
    if exc.errno in (errno.ENOTCONN, errno.EIO, errno.ETIMEDOUT):
        hint = ("the mount may be gone; on Colab check `ls /content/drive/MyDrive` "
                "and remount Drive if needed")
    elif exc.errno == errno.ENOSPC:
        hint = "the disk is full; free space (on Drive, empty the Trash too)"
    elif exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        hint = "the folder is not writable; choose another root with --root"
    after = f" (after {tries} tries)" if is_transient(exc) else ""
    error = StorageError(f"cannot {what} {path}: {exc.strerror or exc}{after}; {hint}")
    error.errno = exc.errno
    return error
