"""``colabrun doctor``'s one edge: what this runtime is, read into :class:`Facts` (the
platform, the GPUs, ``/proc/meminfo``, free disk, the Drive mount, the runtime's start, a
probe write into the jobs' root). The checks over them are pure: :mod:`.doctor`."""

from __future__ import annotations

import os
import platform as pyplatform
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from colabrun.jobs.errors import StorageError
from colabrun.runner.commands.doctor import (
    DRIVE_PROBE_S,
    ROOT_PROBE_BYTES,
    Disk,
    Facts,
    Gpu,
    RootProbe,
    parse_meminfo,
)
from colabrun.runner.commands.parser import version
from colabrun.runner.platform import COLAB_DRIVE, detect_platform, runtime_started_at
from colabrun.runner.watch.control import filesystem_type, needs_polling
from colabrun.runner.watch.deadline import budget_s
from colabrun.state.storage import Storage


def gather_facts(*, now: float | None = None, storage: Storage | None = None,
                 drive_path: Path = COLAB_DRIVE, root: Path | None = None) -> Facts:
    """Look at this runtime.

    Never raises for a missing GPU, a missing ``/proc``, a dead Drive mount or a
    root that cannot be written: what could not be read is reported in the facts.

    Args:
        now: Unix time (default: the clock's).
        storage: the edge probing disks, Drive and the root (default: one try, a
            short timeout).
        drive_path: where Colab mounts ``MyDrive``.
        root: the jobs' root to probe with a write (default: none probed).
    """
    now = time.time() if now is None else now
    # One try, a short limit: a dead mount raises ENOTCONN or hangs (docs/colab.md#drive-pitfalls).
    probe = storage or Storage(attempts=1, timeout_s=DRIVE_PROBE_S)
    place = detect_platform()
    gpus, gpu_problem = _gpus()
    mounted, drive, drive_problem = _drive(probe, drive_path)
    return Facts(
        platform=place, python=pyplatform.python_version(), torch=torch.__version__,
        colabrun=version(),
        cuda=torch.version.cuda, gpus=gpus, gpu_problem=gpu_problem, ram_bytes=_ram_bytes(),
        disks=_disks(probe, [Path(tempfile.gettempdir()), *_cwd()]),
        drive_mounted=mounted, drive=drive, drive_problem=drive_problem,
        runtime_started_at=runtime_started_at(place, now=now),
        budget_s=budget_s(place, spec_budget_s=None), now=now,
        root=None if root is None else probe_root(probe, root),
    )


def probe_root(storage: Storage, root: Path) -> RootProbe:
    """Write, fsync, rename, read back and delete a file in ``root`` (or its nearest
    existing parent), as a checkpoint's commit does; time it. Leaves nothing behind."""
    folder = root
    try:
        while not storage.call("stat", folder, folder.is_dir) and folder != folder.parent:
            folder = folder.parent
    except StorageError as exc:
        return RootProbe(str(root), str(folder), exists=False,
                         problem=str(exc).splitlines()[0])
    found = RootProbe(str(root), str(folder), exists=folder == root,
                      filesystem=filesystem_type(folder), polled=needs_polling(folder))
    name = f".colabrun-doctor-{uuid.uuid4().hex[:8]}"
    tmp, final = folder / f"{name}.tmp", folder / name
    data = os.urandom(ROOT_PROBE_BYTES)
    started = time.monotonic()
    try:
        storage.write_bytes(tmp, data)
        storage.replace(tmp, final)
        back = storage.read_bytes(final)
        seconds = time.monotonic() - started
        if back != data:
            return replace(found, problem=(
                f"wrote {len(data)} bytes, read back {len(back)} bytes that differ"))
        return replace(found, seconds=seconds)
    except StorageError as exc:
        return replace(found, problem=str(exc).splitlines()[0])
    finally:
        for path in (tmp, final):
            try:
                storage.discard_file(path)
            except StorageError:
                pass


def _gpus() -> tuple[tuple[Gpu, ...], str | None]:
    """The CUDA devices; a broken driver is reported, never raised."""
    # torch warns (instead of raising) when a driver is present but unusable:
    # catch that as a fact to show, not a warning to print.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gpus = tuple(Gpu(p.name, int(p.total_memory)) for p in (
                torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())
            )) if torch.cuda.is_available() else ()
        except (RuntimeError, AssertionError) as exc:
            return (), f"{type(exc).__name__}: {exc}"
    problem = str(caught[0].message).splitlines()[0] if caught and not gpus else None
    return gpus, problem


def _cwd() -> list[Path]:
    try:
        return [Path.cwd()]
    except OSError:  # the current folder was deleted
        return []


def _ram_bytes() -> int | None:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return None


def _disks(storage: Storage, paths: Sequence[Path]) -> tuple[Disk, ...]:
    """Free space per filesystem; paths on the same one share a line."""
    found: dict[int, Disk] = {}
    for path in paths:
        try:
            device, free, total = storage.call("disk usage", path, partial(_usage, path))
        except StorageError:
            continue
        old = found.get(device)
        if old is not None and str(path) in old.path.split(", "):
            continue
        shown = f"{old.path}, {path}" if old is not None else str(path)
        found[device] = Disk(shown, free, total)
    return tuple(found.values())


def _usage(path: Path) -> tuple[int, int, int]:
    """The filesystem's device id, free and total bytes."""
    usage = shutil.disk_usage(path)
    return os.stat(path).st_dev, usage.free, usage.total


def _drive(storage: Storage, path: Path) -> tuple[bool, Disk | None, str | None]:
    """Mounted or not; its quota (``disk_usage`` on the mount reports the account's,
    docs/colab.md#drive-pitfalls), or why it could not be read."""
    try:
        if not storage.call("stat", path, path.is_dir):
            return False, None, None
        usage = storage.call("disk usage", path, partial(shutil.disk_usage, path))
    except StorageError as exc:
        return True, None, str(exc).splitlines()[0]
    return True, Disk(str(path), usage.free, usage.total), None
