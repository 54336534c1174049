"""``colabrun doctor``: what people check by hand before a long run on Colab.

``doctor_facts.gather_facts`` is the one edge: it reads the platform, the GPUs
(never failing without CUDA), ``/proc/meminfo``, free disk, the Drive mount,
the runtime's start and a probe write into the jobs' root into a
:class:`Facts`. The checks are pure functions of those facts, each giving
``OK``, ``WARN`` or ``INFO`` lines with a hint when something is off, so
tests fake any runtime (Colab with a T4 and a full Drive, a CPU-only
laptop...) without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from colabrun.runner.commands.report import human_age, human_bytes
from colabrun.runner.watch.deadline import Deadline

Level = Literal["OK", "WARN", "INFO"]

#: Colab's standard runtime has about 12.7 GB of RAM, a high-RAM one 25 GB or more
HIGH_RAM_BYTES = 20 * 10**9
#: below this free on Drive, saves soon fail silently (docs/colab.md#drive-pitfalls)
LOW_DRIVE_BYTES = 2 * 10**9
#: below this free on the VM's disk, staging checkpoints fails with ENOSPC (fact 12)
LOW_DISK_BYTES = 5 * 10**9
#: less than this left on the runtime deserves a warning
LOW_TIME_S = 3600.0
#: a Drive mount that does not answer in this long is taken as dead (fact 10)
DRIVE_PROBE_S = 10.0
#: the probe file written into the root, about one small checkpoint
ROOT_PROBE_BYTES = 1 << 20
#: a probe slower than this means slow saves: every checkpoint goes the same way
SLOW_ROOT_S = 5.0

DRIVE_MOUNT_HINT = ("Drive not mounted: from google.colab import drive; "
                    "drive.mount('/content/drive')")


@dataclass(frozen=True)
class Gpu:
    """One CUDA device."""

    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Disk:
    """Free and total bytes of the filesystem holding ``path``."""

    path: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class RootProbe:
    """What writing a file into the jobs' root showed.

    ``folder`` is where the probe was written: the root, or its nearest existing
    parent when the root does not exist yet (doctor creates nothing).
    """

    path: str
    folder: str
    exists: bool
    filesystem: str = ""
    polled: bool = False
    seconds: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Facts:
    """What :func:`gather_facts` found; tests build their own."""

    platform: str
    python: str
    torch: str
    colabrun: str = "?"
    cuda: str | None = None
    gpus: tuple[Gpu, ...] = ()
    gpu_problem: str | None = None
    ram_bytes: int | None = None
    disks: tuple[Disk, ...] = ()
    drive_mounted: bool = False
    drive: Disk | None = None
    drive_problem: str | None = None
    runtime_started_at: float | None = None
    budget_s: float | None = None
    now: float = 0.0
    root: RootProbe | None = None


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    level: Level
    label: str
    value: str
    hint: str = ""


# -- the checks (pure) -------------------------------------------------------------------


def check_platform(facts: Facts) -> Check:
    """On Colab or not, and which platform."""
    if facts.platform == "colab":
        return Check("OK", "platform", "on Colab")
    where = "Kaggle" if facts.platform == "kaggle" else "a local machine"
    return Check("INFO", "platform", f"not on Colab ({where})")


def check_gpu(facts: Facts) -> Check:
    """The GPUs and their memory, or why there is none."""
    if facts.gpus:
        found = "; ".join(f"{g.name}, {human_bytes(g.memory_bytes)}" for g in facts.gpus)
        return Check("OK", "GPU", found)
    why = f" ({facts.gpu_problem})" if facts.gpu_problem else ""
    if facts.platform == "colab":
        return Check("WARN", "GPU", f"none{why}",
                     "no GPU: Runtime > Change runtime type > GPU")
    if facts.platform == "kaggle":
        return Check("WARN", "GPU", f"none{why}", "no GPU: Settings > Accelerator > a GPU")
    build = "" if facts.cuda else ", this torch is a CPU-only build"
    return Check("INFO", "GPU", f"none{why}{build}; jobs train on the CPU")


def check_ram(facts: Facts) -> Check:
    """Total RAM, and on Colab whether this is a high-RAM runtime."""
    if facts.ram_bytes is None:
        return Check("INFO", "RAM", "unknown (no /proc/meminfo)")
    value = human_bytes(facts.ram_bytes)
    if facts.platform != "colab":
        return Check("OK", "RAM", value)
    if facts.ram_bytes >= HIGH_RAM_BYTES:
        return Check("OK", "RAM", f"{value} (high-RAM runtime)")
    return Check("OK", "RAM", f"{value} (standard runtime, not high-RAM)")


def check_disks(facts: Facts) -> list[Check]:
    """Free space on this machine's disks (where checkpoints are staged)."""
    checks = []
    for disk in facts.disks:
        value = f"{human_bytes(disk.free_bytes)} free of {human_bytes(disk.total_bytes)}"
        label = f"disk {disk.path}"
        if disk.free_bytes < LOW_DISK_BYTES:
            checks.append(Check("WARN", label, value, (
                f"less than {human_bytes(LOW_DISK_BYTES)} free on this machine: checkpoints "
                "are staged here and a full disk fails saves (ENOSPC); delete old files")))
        else:
            checks.append(Check("OK", label, value))
    return checks


def check_drive(facts: Facts) -> Check:
    """Whether Drive is mounted, and the account's free quota."""
    if not facts.drive_mounted:
        if facts.platform == "colab":
            return Check("WARN", "Drive", "not mounted", DRIVE_MOUNT_HINT)
        return Check("INFO", "Drive", "not mounted (Google Drive mounts only on Colab)")
    if facts.drive_problem or facts.drive is None:
        return Check("WARN", "Drive", f"mounted but not answering ({facts.drive_problem})",
                     "the mount may be dead: drive.flush_and_unmount(), then "
                     "drive.mount('/content/drive'), or restart the runtime")
    value = (f"mounted, {human_bytes(facts.drive.free_bytes)} free of "
             f"{human_bytes(facts.drive.total_bytes)}")
    if facts.drive.free_bytes < LOW_DRIVE_BYTES:
        # A full Drive raises nothing at write time; files end up missing or
        # empty (docs/colab.md#drive-pitfalls), so warn before the run, not after.
        return Check("WARN", "Drive", value, (
            f"less than {human_bytes(LOW_DRIVE_BYTES)} free on Drive: checkpoints may be lost "
            "silently; free space at drive.google.com and empty its Trash"))
    return Check("OK", "Drive", value)


def check_root(facts: Facts) -> list[Check]:
    """Whether checkpoints can be written into the jobs' root, and how fast."""
    probe = facts.root
    if probe is None:
        return []
    label = f"root {probe.path}"
    if probe.problem is not None or probe.seconds is None:
        return [Check("WARN", label, f"cannot write into {probe.folder} ({probe.problem})", (
            "no checkpoint can be saved there: fix the path, remount Drive if the root is on "
            "it, or pick another --root"))]
    kind = probe.filesystem or "unknown filesystem"
    notes = [kind, f"{human_bytes(ROOT_PROBE_BYTES)} written, synced, renamed and read back "
                   f"in {probe.seconds * 1000:.0f} ms"]
    if probe.polled:
        notes.append("control requests are polled every second")
    if not probe.exists:
        notes.append("not created yet: the first run creates it")
    value = "; ".join(notes)
    if probe.seconds > SLOW_ROOT_S:
        return [Check("WARN", label, value, (
            f"a {human_bytes(ROOT_PROBE_BYTES)} write took over {SLOW_ROOT_S:.0f} s: every "
            "checkpoint goes the same way, so saves will be slow; a local --root is faster "
            "but dies with the runtime"))]
    return [Check("OK", label, value)]


def check_versions(facts: Facts) -> list[Check]:
    """Python, torch and CUDA versions (a fresh runtime may bring new ones)."""
    cuda = f"{facts.cuda} (torch's build)" if facts.cuda else "none (CPU-only torch build)"
    return [Check("INFO", "colabrun", facts.colabrun), Check("INFO", "Python", facts.python),
            Check("INFO", "torch", facts.torch), Check("INFO", "CUDA", cuda)]


def check_time_left(facts: Facts) -> Check:
    """How long this runtime has at most, from the platform's ceiling."""
    if facts.budget_s is None or facts.runtime_started_at is None:
        return Check("INFO", "time left", "no known limit on this platform")
    deadline = Deadline.of(started_at=facts.runtime_started_at, budget=facts.budget_s)
    left = max(0.0, deadline.time_left(facts.now) or 0.0)
    up = human_age(facts.now - facts.runtime_started_at)
    value = (f"at most {human_age(left)} (up {up} of a {human_age(facts.budget_s)} ceiling; "
             "the runtime may end sooner)")
    if left < LOW_TIME_S:
        return Check("WARN", "time left", value, (
            "under an hour left at most: a long run will be cut off; it resumes from its "
            "last checkpoint on the next runtime"))
    return Check("OK", "time left", value)


def run_checks(facts: Facts) -> list[Check]:
    """Every check, in the report's order."""
    return [check_platform(facts), check_gpu(facts), check_ram(facts), *check_disks(facts),
            check_drive(facts), *check_root(facts), check_time_left(facts),
            *check_versions(facts)]


def render(checks: Sequence[Check]) -> str:
    """``LEVEL label: value`` lines, each hint on its own line below."""
    lines = []
    for check in checks:
        lines.append(f"{check.level:<4} {check.label}: {check.value}")
        if check.hint:
            lines.append(f"     hint: {check.hint}")
    return "\n".join(lines)


def report_json(facts: Facts, checks: Sequence[Check]) -> dict[str, Any]:
    """The facts and checks as plain data, for ``--json``."""
    return {"facts": asdict(facts), "checks": [asdict(c) for c in checks]}


def parse_meminfo(text: str) -> int | None:
    """``MemTotal`` of a ``/proc/meminfo`` text, in bytes."""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "MemTotal" and rest.split():
            return int(rest.split()[0]) * 1024
    return None
