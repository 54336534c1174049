"""Which ranks each process runs: a pure plan, read by the supervisor (without torch) and
by the training loop.

A job's math is defined by its ``ranks`` (``distributed.ranks``): each optimizer step
averages the gradients of one batch per rank. A runtime runs them on ``processes``
processes, each running ``ranks / processes`` consecutive ranks as *virtual ranks*: their
batches go through the model one after the other (``run.split``), each with its own random
streams, and their gradients add up before the step. Rank 0 is always in process 0, the
leader: it decides saves and stops, and writes the checkpoints and the job's state.

Exactness across layouts: the gradients of ``ranks`` batches are summed in an order set by
the layout (in one process, in rank order; across processes, by the collective). With two
ranks both orders give the same bits (``a + b == b + a``, and halving is exact); with more
they may not, and a resume on another number of processes is refused unless
``distributed.allow_inexact`` (:func:`layout_change_problem`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from colabrun.jobs.spec import DistributedPolicy

#: where Linux lists the NVIDIA GPUs the driver sees (no torch needed to count them)
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Layout:
    """The ranks of a job and the processes running them, as one process sees it.

    Args:
        ranks: the data-parallel degree the math is defined by.
        processes: processes running them on this runtime (a divisor of ``ranks``).
        process: this process's index (0: the leader).
        backend: the torch.distributed backend between the processes.
    """

    ranks: int = 1
    processes: int = 1
    process: int = 0
    backend: str = "gloo"

    def __post_init__(self) -> None:
        if self.ranks < 1 or self.processes < 1 or self.ranks % self.processes:
            raise ValueError(f"{self.processes} processes cannot run {self.ranks} ranks")
        if not 0 <= self.process < self.processes:
            raise ValueError(f"process {self.process} of {self.processes}")

    @property
    def per_process(self) -> int:
        """Ranks each process runs (virtual ranks when more than one)."""
        return self.ranks // self.processes

    @property
    def hosted(self) -> range:
        """The ranks this process runs, in order."""
        return range(self.process * self.per_process, (self.process + 1) * self.per_process)

    @property
    def first_rank(self) -> int:
        """The first rank this process runs: its random streams are the global ones
        outside ``run.split``."""
        return self.process * self.per_process

    @property
    def is_leader(self) -> bool:
        """Whether this process runs rank 0: it decides, saves and writes the state."""
        return self.process == 0

    @property
    def is_grouped(self) -> bool:
        """Whether this process trains in a group of several processes."""
        return self.processes > 1

    def of_process(self, process: int) -> Layout:
        """The same layout, as process ``process`` sees it."""
        return replace(self, process=process)


def visible_gpus(environ: dict[str, str] | None = None, gpus_dir: Path = NVIDIA_GPUS) -> int:
    """The GPUs this runtime's processes may use, counted without importing torch:
    ``CUDA_VISIBLE_DEVICES`` when set, else the driver's list (0 without a driver)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(list(gpus_dir.iterdir()))
    except OSError:
        return 0


def plan_layout(policy: DistributedPolicy, *, gpus: int, device: str = "auto") -> Layout:
    """The leader's layout on this runtime. Pure.

    Args:
        policy: the spec's ``distributed`` section.
        gpus: the GPUs this runtime has (:func:`visible_gpus`).
        device: the spec's ``device`` (``cpu``: the GPUs are not used).

    Returns:
        ``processes`` as given, or for ``auto`` the largest divisor of ``ranks`` not above
        the GPUs used (1 without any); the backend, NCCL when training on GPUs.
    """
    on_gpu = gpus > 0 and device != "cpu"
    if policy.processes == "auto":
        processes = most_processes(policy.ranks, gpus if on_gpu else 0)
    else:
        processes = int(policy.processes)
    backend = policy.backend if policy.backend != "auto" else ("nccl" if on_gpu else "gloo")
    return Layout(ranks=policy.ranks, processes=processes, backend=backend)


def most_processes(ranks: int, gpus: int) -> int:
    """The most processes that run ``ranks`` on ``gpus`` GPUs, one each: the largest
    divisor of ``ranks`` not above ``gpus`` (1 without any)."""
    return max(d for d in range(1, ranks + 1) if ranks % d == 0 and d <= max(1, gpus))


def layout_problem(layout: Layout, gpus: int, *, device: str = "auto") -> str | None:
    """Why ``layout`` cannot run on this runtime, or ``None`` when it can. Pure.

    NCCL runs one process per GPU and refuses two on one: a group of more NCCL processes
    than the GPUs it trains on would crash at its first collective, attempt after attempt.

    Args:
        layout: the session's layout (:func:`plan_layout`).
        gpus: the GPUs this runtime has (:func:`visible_gpus`).
        device: the spec's ``device`` (``cpu``: the GPUs are not used).

    Returns:
        One line: what is wrong, where, and how to fix it.
    """
    used = 0 if device == "cpu" else gpus
    if layout.backend != "nccl" or not layout.is_grouped or layout.processes <= used:
        return None
    fits = most_processes(layout.ranks, used)
    auto = (f"1 process, {layout.ranks} virtual ranks" if fits == 1
            else f"{fits} processes of {layout.ranks // fits} virtual ranks each")
    has = "device: cpu trains on none" if device == "cpu" else f"this runtime has {gpus}"
    return (f"distributed.processes: {layout.processes} processes with NCCL need "
            f"{layout.processes} GPUs, {has}: set processes: auto ({auto}), or backend: gloo")


def layout_change_problem(saved_processes: int, layout: Layout, *, allow_inexact: bool,
                          micro_batches: int = 1) -> str | None:
    """Why a checkpoint saved by ``saved_processes`` processes cannot continue bit-exactly
    in ``layout``, or ``None`` when it can (or when inexact is allowed). Pure.

    Args:
        saved_processes: the processes that ran the ranks when the checkpoint was saved.
        layout: this runtime's.
        allow_inexact: the spec's ``distributed.allow_inexact``.
        micro_batches: the pieces each rank's batch is cut into (more than 1 after a CUDA
            OOM: each process then adds its pieces before the processes add theirs).
    """
    if saved_processes == layout.processes or allow_inexact:
        return None
    if layout.ranks > 2:
        why = f"this job's {layout.ranks} ranks"
    elif micro_batches > 1 and layout.ranks > 1:
        why = f"this job's ranks, cut into {micro_batches} micro-batches since a CUDA OOM,"
    else:
        return None
    return (f"{why} ran in {saved_processes} process(es) and would continue in "
            f"{layout.processes}: their gradients would be summed in another order, and the "
            f"run would not be bit-exact; run it on {saved_processes} process(es) "
            "(distributed.processes), or set distributed.allow_inexact: true to continue "
            "anyway (docs/concepts.md#several-processes)")
