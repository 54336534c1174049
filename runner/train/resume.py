"""Finding the checkpoint a run continues from, and loading it in the background.

:func:`find_resume_point` follows the resume plan (:mod:`colabrun.runner.train.plan`)
and takes the newest checkpoint that verifies, warning about each one skipped;
:class:`PendingResume` runs it while the user's function sets up. Its state goes
back into the run as :class:`~colabrun.runner.train.restore.Restorer` says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from colabrun.jobs.errors import CheckpointError
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.train.plan import Attempt, plan_resume
from colabrun.runner.train.position import EPOCH_START, Position
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import written_after_fencing
from colabrun.state.manifest import Manifest
from colabrun.state.model import CheckpointRecord, JobState


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint left the loop, and what it holds."""

    name: str
    step: int
    epochs_done: int
    batch: int
    where: str
    payload: Mapping[str, Any]
    extras: Mapping[str, Any]

    @property
    def position(self) -> Position:
        """The loop's position when it was saved."""
        return Position(epoch=self.epochs_done, batch=self.batch, step=self.step)


class PendingResume:
    """A resume point being found and loaded in a background thread.

    Reading the newest checkpoint (and checking its sha256) overlaps with the
    user's setup (building the model, loading data) until the run first needs
    it. ``find`` returns the resume point or ``None``; ``on_found`` is then
    called in the waiting thread (to record the session) and its result used.
    """

    def __init__(self, find: Callable[[], Any],
                 on_found: Callable[[Any], ResumePoint | None]) -> None:
        self._on_found = on_found
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._load, args=(find,),
                                        name="colabrun-resume", daemon=True)
        self._thread.start()

    def _load(self, find: Callable[[], Any]) -> None:
        try:
            self._box["value"] = find()
        except BaseException as exc:  # raised where the run waits for it
            self._box["error"] = exc

    def result(self) -> ResumePoint | None:
        """Wait for the load; record and return its resume point (or raise its error)."""
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._on_found(self._box["value"])


@dataclass(frozen=True)
class Found:
    """What the search for a resume point found.

    Args:
        point: the resume point; ``None``: a fresh start.
        failed: the root's checkpoints that failed verification.
        record: the record of the root checkpoint resumed from (``None`` for a local copy).
        load_s: seconds its verification and load took.
    """

    point: ResumePoint | None = None
    failed: list[str] = field(default_factory=list)
    record: CheckpointRecord | None = None
    load_s: float | None = None


def find_resume_point(job: JobDir, state: JobState, console: Console, clock: Clock) -> Found:
    """Load the newest checkpoint that verifies, root or local, warning about each one
    skipped.

    Args:
        job: the job's folders.
        state: its state file, as read at the start of the session.
        console: where warnings go.
        clock: the injected clock (the load's duration).

    Returns:
        What was found (a fresh start when nothing verifies).
    """
    plan = plan_resume(state.checkpoints, job.store.list_names(), job.local.list_names())
    failed: list[str] = []
    for attempt in plan.attempts:
        store = job.store if attempt.source == "root" else job.local
        started = clock.monotonic()
        try:
            manifest, payload = store.load_verified(attempt.name)
        except CheckpointError as exc:
            console.warn(f"skipping {exc}; falling back to an older checkpoint")
            if attempt.source == "root":
                failed.append(attempt.name)
            continue
        if written_after_fencing(state, manifest.generation, manifest.created_at):
            console.warn(f"skipping {attempt.name}: written by generation {manifest.generation} "
                         "after it lost the job to a newer runner (fenced, "
                         "docs/concepts.md#generation-and-fencing)")
            continue
        if attempt.source == "local" and attempt.name not in plan.candidates:
            console.info(f"{attempt.name} is newer on this runtime's disk than under the root: "
                         "resuming from the local copy (it is uploaded with the next save)")
        return _found(attempt, manifest, payload, failed, load_s=clock.monotonic() - started)
    if plan.candidates:
        console.warn("no checkpoint verified: starting from scratch (the unverifiable ones "
                     "are kept for inspection)")
    return Found(failed=failed)


def _found(attempt: Attempt, manifest: Manifest, payload: Mapping[str, Any], failed: list[str],
           *, load_s: float) -> Found:
    point = ResumePoint(
        name=attempt.name, step=manifest.step, epochs_done=manifest.epoch, batch=manifest.batch,
        where=str(manifest.meta.get("where", EPOCH_START)), payload=payload,
        extras=dict(manifest.meta.get("extras", {})))
    record = manifest.record() if attempt.source == "root" else None
    return Found(point, failed, record, load_s)
