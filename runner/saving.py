"""Saving a snapshot: commit it, record it in the state file, rotate old ones.

The order is the commit protocol's (DESIGN.md): the checkpoint folder is
committed first, only then does ``state.json`` name it, and only then are
older checkpoints rotated out. A crash between any two steps leaves a job
that resumes from the newest checkpoint that verifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.clock import Clock
from state.checkpoints import CheckpointStore
from state.model import CheckpointRecord, JobState
from state.rotation import plan_rotation
from state.statefile import StateFile
from state.transitions import forget_checkpoints, learn_timing, record_checkpoint


class Saver:
    """Commits checkpoints of one session.

    Args:
        store: the job's checkpoint store.
        statefile: the job's state file.
        keep_last: checkpoints to keep (the spec's policy).
        generation: this session's generation, part of every checkpoint name.
        clock: the injected clock.
    """

    def __init__(
        self,
        store: CheckpointStore,
        statefile: StateFile,
        *,
        keep_last: int,
        generation: int,
        clock: Clock,
    ) -> None:
        self.store = store
        self.statefile = statefile
        self.keep_last = keep_last
        self.generation = generation
        self.clock = clock
        self.last: CheckpointRecord | None = None

    def save(
        self,
        payload: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        batch: int,
        meta: Mapping[str, Any],
        expected_bytes: int = 0,
        step_s: float | None = None,
    ) -> CheckpointRecord:
        """Commit ``payload``, record it, rotate; return its record."""
        started = self.clock.monotonic()
        manifest = self.store.commit(
            payload, step=step, epoch=epoch, batch=batch, generation=self.generation,
            created_at=self.clock.time(), meta=meta, expected_bytes=expected_bytes,
        )
        record = manifest.record()
        observed = {"save_s": self.clock.monotonic() - started}
        if step_s is not None:
            observed["step_s"] = step_s
        now = self.clock.time()
        state = self.statefile.update(
            lambda s: learn_timing(record_checkpoint(s, record, now=now), now=now, **observed)
        )
        self.last = record
        self._rotate(state, newest=record.name)
        return record

    def _rotate(self, state: JobState, *, newest: str) -> None:
        doomed = plan_rotation(state.checkpoints, keep_last=self.keep_last, newest_verified=newest)
        if not doomed:
            return
        now = self.clock.time()
        self.statefile.update(lambda s: forget_checkpoints(s, doomed, now=now))
        for name in doomed:
            self.store.discard(name)
