"""``colabrun clean NAME``: delete a job for good, the way Drive needs.

Every file is truncated to 0 bytes before it is deleted: a deleted Drive file sits in the
Trash and counts against the quota for 30 days (docs/colab.md#drive-pitfalls). The order
keeps an interrupted clean harmless: ``state.json`` and ``spec.json`` go first (the job no
longer lists), then each checkpoint, manifest first (never a half-deleted one that looks
committed), then the rest, then this runtime's staging folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from colabrun.jobs.errors import ColabrunError
from colabrun.runner.commands.report import human_bytes
from colabrun.runner.platform import pid_alive, runtime_id
from colabrun.state.jobdir import SPEC_NAME, JobDir
from colabrun.state.lease import LeaseHeld, Owner, Verdict, held_message, judge
from colabrun.state.statefile import STATE_NAME


@dataclass(frozen=True)
class CleanPlan:
    """What a clean deletes."""

    job: JobDir
    checkpoints: tuple[str, ...]
    checkpoint_bytes: int
    local: Path | None

    def describe(self) -> str:
        """One line for the question asked before deleting."""
        local = f", and its staging folder {self.local}" if self.local else ""
        return (f"delete job {self.job.name!r} under {self.job.root}: "
                f"{len(self.checkpoints)} checkpoints ({human_bytes(self.checkpoint_bytes)}), "
                f"its state, spec, metrics and log{local}")


def plan_clean(job: JobDir) -> CleanPlan:
    """What cleaning ``job`` deletes; refuses a job a live runner holds.

    Raises:
        LeaseHeld: a live runner holds the job (stop it first).
        StateCorrupt: as reading ``state.json``.
    """
    state = job.statefile.read()
    if state is not None and state.lease is not None:
        me = Owner(runtime_id=runtime_id(), host=socket.gethostname(), pid=os.getpid())
        now = time.time()
        if judge(state.lease, me, now=now, is_alive=pid_alive) is Verdict.HELD:
            raise LeaseHeld(f"{held_message(state, state.lease, now=now)}; stop it "
                                 f"first (`colabrun stop {job.name}`), then clean")
    names = tuple(sorted(job.store.list_names()))
    sizes = sum(r.size_bytes for r in state.checkpoints) if state is not None else 0
    local = job.local.dir.parent
    return CleanPlan(job, names, sizes, local if local.exists() else None)


def clean(plan: CleanPlan, *, say: Callable[[str], None]) -> None:
    """Delete what ``plan`` names, in the safe order of the module's docstring."""
    job, storage = plan.job, plan.job.storage
    for name in (STATE_NAME, SPEC_NAME):
        if storage.size_of(job.path / name) is not None:
            storage.discard_file(job.path / name)
    for name in plan.checkpoints:
        job.store.discard(name)
    storage.discard_tree(job.path)
    if plan.local is not None:
        shutil.rmtree(plan.local, ignore_errors=True)
    say(f"deleted job {job.name!r} ({job.path})")


class NotConfirmed(ColabrunError, RuntimeError):
    """A clean that was not confirmed: nothing was deleted."""

    exit_code = 2
