"""Where we run: Colab or not, the default root, the runtime's identity, the device."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from colabrun.jobs.errors import ColabrunError
from colabrun.jobs.spec import JobSpec
from colabrun.runner import knobs

if TYPE_CHECKING:  # imported on first use: `colabrun stop` and `status` start without torch
    import torch

COLAB_DRIVE = Path("/content/drive/MyDrive")


class DeviceUnavailable(ColabrunError, RuntimeError):
    """The spec asks for a GPU this runtime does not have, and forbids the CPU."""

    exit_code = 2


def is_colab() -> bool:
    """Colab's VM has ``/var/colab/hostname`` and sets ``COLAB_RELEASE_TAG``.

    (docs/colab.md#limits)
    """
    return Path("/var/colab/hostname").exists() or "COLAB_RELEASE_TAG" in os.environ


def default_root() -> Path:
    """Drive's ``MyDrive/colabrun`` when on Colab with Drive mounted, else ``./colabrun-runs``."""
    try:
        mounted = is_colab() and COLAB_DRIVE.is_dir()
    except OSError:  # a dead mount (ENOTCONN): docs/colab.md#drive-pitfalls
        mounted = False
    if mounted:
        return COLAB_DRIVE / "colabrun"
    return Path.cwd() / "colabrun-runs"


def runtime_id() -> str:
    """An id for this runtime: host name plus the kernel's boot id.

    A fresh Colab runtime is a new VM (new boot id); the host name tells apart
    containers that share one kernel.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex[:8]
    return f"{socket.gethostname()}-{boot}"


def detect_platform() -> str:
    """``colab``, ``kaggle`` or ``local``."""
    if is_colab():
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or Path("/kaggle/working").is_dir():
        return "kaggle"
    return "local"


RUNTIME_MARKER = Path("/tmp/colabrun-runtime-start")


def runtime_started_at(platform: str, *, now: float) -> float:
    """When this runtime's budget started counting (Unix time).

    On Colab and Kaggle: the VM's boot (``/proc/uptime``) or a marker written in
    /tmp at colabrun's first start on this runtime, whichever is earlier (the
    safer guess, docs/colab.md#limits). Locally: now, the budget is per session.
    """
    override = knobs.runtime_started_at()
    if override is not None:
        return override
    if platform not in ("colab", "colab_pro", "kaggle"):
        return now
    candidates = [now]
    try:
        candidates.append(now - float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        if RUNTIME_MARKER.exists():
            candidates.append(float(RUNTIME_MARKER.read_text().strip()))
        else:
            RUNTIME_MARKER.write_text(f"{now}\n")
    except (OSError, ValueError):
        pass
    return min(candidates)


#: the exit status of a child whose parent died before the child asked to die with it
ORPHANED_EXIT = 121

#: what every child interpreter colabrun starts (``python -c``) runs first, with nothing
#: but the standard library imported, so before torch's seconds of imports: what
#: :func:`die_with_parent` does, for the parent whose pid is ``sys.argv[1]``
DIE_WITH_PARENT_FIRST = f"""\
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
if os.getppid() != int(sys.argv[1]):
    os._exit({ORPHANED_EXIT})
"""


def child_entry(code: str) -> str:
    """The ``python -c`` program of a child interpreter that dies with its parent.

    Start it as ``[sys.executable, "-c", child_entry(code), str(os.getpid()), *args]``:
    :data:`DIE_WITH_PARENT_FIRST` runs before ``code``, which finds its own arguments
    from ``sys.argv[2]`` on.

    Args:
        code: the child's program (its imports included).
    """
    return DIE_WITH_PARENT_FIRST + code


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans).

    Args:
        parent: the pid of the parent this process must have; if it has another, that
            parent died before the request (which then never fires), and this process
            exits at once (``os._exit``) with :data:`ORPHANED_EXIT`. ``None``: no check.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if parent is not None and os.getppid() != parent:
        os._exit(ORPHANED_EXIT)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def choose_device(
    spec: JobSpec, *, cuda_available: bool | None = None
) -> tuple[torch.device, str | None]:
    """The device to train on, by the spec's ``device`` and ``cpu_fallback``.

    Returns:
        The device, and a warning to show when a GPU was wanted but is missing.

    Raises:
        DeviceUnavailable: ``cuda`` is required but missing and fallback is off.
    """
    import torch

    if spec.device == "cpu":
        return torch.device("cpu"), None
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if has_cuda:
        return torch.device("cuda"), None
    if not spec.allows_cpu_fallback:
        raise DeviceUnavailable(
            f"job {spec.name!r} asks for device 'cuda' but this runtime has no usable GPU; "
            "on Colab pick Runtime > Change runtime type > GPU, or set cpu_fallback: true"
        )
    return torch.device("cpu"), (
        "no usable GPU on this runtime: training on the CPU (much slower); "
        "on Colab pick Runtime > Change runtime type > GPU"
    )


def use_deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)``, without importing
    ``torch._inductor.config`` itself (sympy, dynamo: 1.15 s on the project's 2-core
    machine; the first optimizer imports it anyway, which the worker does ahead:
    :func:`~colabrun.runner.watch.worker.import_ahead`): the inductor's flag is set where
    something imported it already; the loop calls this again as training starts, after
    the user's set-up."""
    import torch

    torch._C._set_deterministic_algorithms(mode, warn_only=True)
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        setattr(config, "deterministic", mode)  # noqa: B010 - a module's attribute

