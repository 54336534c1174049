"""Publishing a local checkpoint: its upload to the root, its record in ``state.json``,
and the root's rotation. Runs on the uploader's thread
(:class:`~colabrun.runner.save.uploader.Uploader`); every step is fenced by the
session's lease.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from colabrun.jobs.spec import KeepBest
from colabrun.runner.clock import Clock
from colabrun.runner.train.metrics import MetricsLog
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.lease import Fence, check_fence, heartbeat
from colabrun.state.model import CheckpointRecord, JobState
from colabrun.state.rotation import plan_rotation
from colabrun.state.statefile import StateFile
from colabrun.state.transitions import forget_checkpoints, learn_timing, record_checkpoint


@dataclass(frozen=True)
class Uploaded:
    """A checkpoint under the root, on record."""

    record: CheckpointRecord
    #: seconds from its snapshot to its commit under the root
    save_s: float
    #: the state file as the record left it
    state: JobState
    #: the checkpoints its record rotated out (their folders are deleted next)
    rotated: tuple[str, ...]


@dataclass(frozen=True)
class Publisher:
    """Uploads local checkpoints to the root and keeps ``state.json`` in step.

    Args:
        local: the staging store on this runtime's disk.
        store: the job's store under the root.
        statefile: the job's state file.
        fence: this session's lease.
        clock: the injected clock.
        keep_last: checkpoints to keep under the root.
        metrics: made durable before each checkpoint commits under the root.
        keep_best: the metric naming the best checkpoint, kept out of rotation.
    """

    local: CheckpointStore
    store: CheckpointStore
    statefile: StateFile
    fence: Fence
    clock: Clock
    keep_last: int
    metrics: MetricsLog | None = None
    keep_best: KeepBest | None = None

    def upload(self, name: str, *, local_s: float, step_s: float | None,
               fresh: bool = False, on_copied: Callable[[], None] | None = None) -> Uploaded:
        """Copy local checkpoint ``name`` to the root and record it, with what it taught.

        Args:
            name: the local checkpoint.
            local_s: how long its local write took.
            step_s: the last step's duration, if measured.
            fresh: this process's writer committed it (and hashed it as it wrote it):
                the copy does not read it twice to check it again.
            on_copied: told once the copy is committed under the root, before its record.

        Returns:
            Its record, its save duration, the updated state.

        Raises:
            LeaseLost: another runner took the job over (nothing was written).
            ColabrunError, OSError: the root failed; the upload may be retried whole.
        """
        current = self.statefile.read()
        if current is not None:
            check_fence(current, self.fence)
        # Metrics first: once the checkpoint commits, a resume never logs its steps
        # again, so their records must be durable by then. Records of later steps
        # written now are logged again when redone, and readers keep the last.
        if self.metrics is not None:
            self.metrics.sync()  # a failure fails this upload: it is retried whole
        started = self.clock.monotonic()
        # the commit's ~10 root calls in one thread (not the state file's: its lock must
        # never be left held by a call abandoned for hanging)
        record = self.store.storage.batch(
            "upload", self.store.dir / name,
            partial(self.store.upload_from, self.local, name, verify_source=not fresh)).record()
        save_s = local_s + self.clock.monotonic() - started
        if on_copied is not None:
            on_copied()
        observed = {"save_s": save_s} if step_s is None else {"save_s": save_s, "step_s": step_s}
        now = self.clock.time()
        doomed: list[str] = []

        def change(s: JobState) -> JobState:
            s = learn_timing(record_checkpoint(heartbeat(s, self.fence, now=now), record,
                                               now=now), now=now, **observed)
            doomed[:] = plan_rotation(s.checkpoints, keep_last=self.keep_last,
                                      keep_best=self.keep_best,
                                      newest_verified=record.name)
            return forget_checkpoints(s, doomed, now=now)

        # one round trip (on Drive each is a lock, a read, a write, an fsync and a rename):
        # the new record, and the records rotated out, whose folders are deleted after
        state = self.statefile.update(change)
        return Uploaded(record, save_s, state, tuple(doomed))

    def rotate(self, uploaded: Uploaded) -> None:
        """Delete the folders of the checkpoints the upload's record rotated out (never
        the newest): forgotten first, so a crash meanwhile leaves folders nobody names.

        Raises:
            ColabrunError, OSError: the root failed.
        """
        for name in uploaded.rotated:
            self.store.discard(name)
