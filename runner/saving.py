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
from state.lease import Fence, check_fence, heartbeat
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
        fence: this session's lease (its generation is part of every checkpoint
            name); a state file holding another lease means a takeover (fencing).
        clock: the injected clock.
        heartbeat_s: how often :meth:`refresh_lease` writes a heartbeat.
    """

    def __init__(
        self,
        store: CheckpointStore,
        statefile: StateFile,
        *,
        keep_last: int,
        fence: Fence,
        clock: Clock,
        heartbeat_s: float = 60.0,
    ) -> None:
        self.store = store
        self.statefile = statefile
        self.keep_last = keep_last
        self.fence = fence
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.last: CheckpointRecord | None = None
        self._last_beat = clock.monotonic()

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
        """Commit ``payload``, record it, rotate; return its record.

        Raises:
            LeaseLost: another runner took the job over; nothing was recorded.
        """
        current = self.statefile.read()
        if current is not None:
            check_fence(current, self.fence)  # do not even write a fenced checkpoint
        started = self.clock.monotonic()
        manifest = self.store.commit(
            payload, step=step, epoch=epoch, batch=batch, generation=self.fence.generation,
            created_at=self.clock.time(), meta=meta, expected_bytes=expected_bytes,
        )
        record = manifest.record()
        observed = {"save_s": self.clock.monotonic() - started}
        if step_s is not None:
            observed["step_s"] = step_s
        now = self.clock.time()
        state = self.statefile.update(lambda s: learn_timing(
            record_checkpoint(heartbeat(s, self.fence, now=now), record, now=now),
            now=now, **observed))
        self._last_beat = self.clock.monotonic()
        self.last = record
        self._rotate(state, newest=record.name)
        return record

    def _rotate(self, state: JobState, *, newest: str) -> None:
        doomed = plan_rotation(state.checkpoints, keep_last=self.keep_last, newest_verified=newest)
        if not doomed:
            return
        now = self.clock.time()
        self.statefile.update(
            lambda s: forget_checkpoints(heartbeat(s, self.fence, now=now), doomed, now=now))
        for name in doomed:
            self.store.discard(name)

    def refresh_lease(self) -> None:
        """Write a heartbeat when the last one is ``heartbeat_s`` old.

        Raises:
            LeaseLost: another runner took the job over.
        """
        if self.clock.monotonic() - self._last_beat < self.heartbeat_s:
            return
        now = self.clock.time()
        self.statefile.update(lambda s: heartbeat(s, self.fence, now=now))
        self._last_beat = self.clock.monotonic()
