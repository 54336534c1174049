"""Storage faults: a filesystem that fails, slows, hangs, loses uploads or serves stale
listings, as Drive does (docs/fault_injection.md#storage-faults-drive). Part of the public
fault API: import them from :mod:`colabrun.runner.faults`."""

from __future__ import annotations

import errno as errnos
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from colabrun.state.filesystem import OsFs, copy_by_writes


@dataclass
class Fail:
    """Make the ``nth`` call (``None``: every call) of ``op`` fail with ``errno``.

    ``op`` is one of ``open``, ``write``, ``fsync``, ``fsync_dir``, ``replace``,
    ``listdir``, ``stat_size``, ``makedirs``, ``truncate``, ``unlink``, ``rmdir``.
    ``path_contains`` limits the rule to matching paths.
    """

    op: str
    nth: int | None = 1
    errno: int = errnos.EIO
    path_contains: str = ""
    seen: int = field(default=0, init=False)

    def hits(self, op: str, path: Path | str) -> bool:
        if op != self.op or self.path_contains not in str(path):
            return False
        self.seen += 1
        return self.nth is None or self.seen == self.nth


class _FaultyFile:
    """A file whose writes go through the filesystem's fault rules."""

    def __init__(self, fs: FaultyFs, path: Path, file: IO[bytes]) -> None:
        self._fs = fs
        self._path = path
        self._file = file

    def write(self, data: Any) -> int:
        self._fs.before("write", self._path)
        if self._fs.slow_write_s:
            time.sleep(self._fs.slow_write_s)
        if self._fs.hang_writes is not None:
            self._fs.hang_writes.wait()
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._fs.after_close(self._path)


class FaultyFs(OsFs):
    """The real filesystem, with the faults a Drive mount shows (docs/colab.md#drive-pitfalls).

    Args:
        fail: rules failing chosen calls with a chosen errno.
        slow_write_s: sleep this long in every write.
        hang_writes: when given and not set, every write blocks until it is set.
        lose_uploads: files (by name) that silently come out empty or vanish
            after they are closed, as a VM that died before DriveFS uploaded them.
        lose_how: ``"truncate"`` (0 bytes), ``"half"`` or ``"delete"``.

    :meth:`freeze_listings` serves stale listings (a fresh runtime's minutes-stale
    view, F11); ``mount_lost = True`` fails every call with ``ENOTCONN``.
    """

    def __init__(self, *, fail: Iterable[Fail] = (), slow_write_s: float = 0.0,
                 hang_writes: threading.Event | None = None,
                 lose_uploads: Callable[[Path], bool] | None = None,
                 lose_how: str = "truncate") -> None:
        self.rules = list(fail)
        self.slow_write_s = slow_write_s
        self.hang_writes = hang_writes
        self.lose_uploads = lose_uploads
        self.lose_how = lose_how
        self.mount_lost = False
        self.calls: list[tuple[str, str]] = []
        self._stale: dict[str, list[str]] | None = None

    def freeze_listings(self, *folders: Path, names: Iterable[str] | None = None) -> None:
        """From now on, list ``folders`` as they are now, or as holding only ``names``
        (the minutes-stale view another runtime gets, F11)."""
        self._stale = {str(f): list(names) if names is not None else
                       (super().listdir(f) if f.exists() else []) for f in folders}

    def before(self, op: str, path: Path | str) -> None:
        """Raise the fault a call meets, if any."""
        self.calls.append((op, str(path)))
        if self.mount_lost:
            raise OSError(errnos.ENOTCONN, "Transport endpoint is not connected", str(path))
        for rule in self.rules:
            if rule.hits(op, path):
                raise OSError(rule.errno, os.strerror(rule.errno), str(path))

    def after_close(self, path: Path) -> None:
        if self.lose_uploads is None or not self.lose_uploads(path) or not path.exists():
            return
        if self.lose_how == "delete":
            path.unlink()
        else:
            keep = path.stat().st_size // 2 if self.lose_how == "half" else 0
            os.truncate(path, keep)

    def open(self, path: Path, mode: str) -> IO[bytes]:
        self.before("open", path)
        file = super().open(path, mode)
        if "r" in mode:
            return file
        return _FaultyFile(self, path, file)  # type: ignore[return-value]

    def copy_range(self, src: IO[bytes], dst: IO[bytes], offset: int, count: int) -> int:
        return copy_by_writes(src, dst, offset, count)  # through the faulty file's write

    def fsync(self, file: IO[bytes]) -> None:
        self.before("fsync", getattr(file, "name", "?"))
        inner = getattr(file, "_file", file)
        super().fsync(inner)

    def fsync_dir(self, path: Path) -> None:
        self.before("fsync_dir", path)
        super().fsync_dir(path)

    def replace(self, src: Path, dst: Path) -> None:
        self.before("replace", src)
        super().replace(src, dst)

    def listdir(self, path: Path) -> list[str]:
        self.before("listdir", path)
        if self._stale is not None and str(path) in self._stale:
            return list(self._stale[str(path)])
        return super().listdir(path)

    def stat_size(self, path: Path) -> int:
        self.before("stat_size", path)
        return super().stat_size(path)

    def makedirs(self, path: Path) -> None:
        self.before("makedirs", path)
        super().makedirs(path)

    def truncate(self, path: Path) -> None:
        self.before("truncate", path)
        super().truncate(path)

    def unlink(self, path: Path) -> None:
        self.before("unlink", path)
        super().unlink(path)

    def rmdir(self, path: Path) -> None:
        self.before("rmdir", path)
        super().rmdir(path)
