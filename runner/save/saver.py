"""Saving: commit locally, upload in the background, record, rotate.

The commit protocol (docs/concepts.md#checkpoints-and-the-commit-protocol), in two
tiers, both off the training thread. :meth:`Saver.save` takes the snapshot and hands
it to the :class:`~colabrun.runner.save.writer.Writer`, which commits it to a local
staging folder (survives a worker crash on this runtime); training waits only for
the snapshot. The :class:`~colabrun.runner.save.uploader.Uploader` then publishes
the newest local checkpoint (:mod:`colabrun.runner.save.publish`). If the root fails
or hangs (a lost Drive mount, F9), training goes on with local checkpoints, the user
is told plainly that progress is not durable (:mod:`colabrun.runner.save.notices`), and
the upload is retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from colabrun.jobs.errors import StorageTimeout
from colabrun.jobs.handle import Stateful
from colabrun.jobs.spec import KeepBest
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.save.capture import (
    SaveContext,
    SaveReceipt,
    Snapshot,
    checkpoint_meta,
    take_snapshot,
)
from colabrun.runner.save.notices import RootNotices
from colabrun.runner.save.pace import UPLOAD_BUDGET, UploadPace
from colabrun.runner.save.publish import Publisher
from colabrun.runner.save.snapshot import HostBuffers
from colabrun.runner.save.task import SaveTask, WriteStats, fork_available
from colabrun.runner.save.uploader import Uploader
from colabrun.runner.save.writer import Writer
from colabrun.runner.train.metrics import MetricsLog
from colabrun.runner.train.position import Position
from colabrun.runner.train.report import Durability
from colabrun.runner.watch.lease_keeper import LeaseKeeper
from colabrun.state.checkpoints import CheckpointStore, checkpoint_name
from colabrun.state.lease import Fence
from colabrun.state.manifest import Manifest
from colabrun.state.model import CheckpointRecord
from colabrun.state.statefile import StateFile

#: local checkpoints kept (the writer removes older ones), besides the one being uploaded
KEEP_LOCAL = 2
#: the fault point passed when a save is committed locally, before its upload is queued
COMMITTED_POINT = "save.committed"
#: how long a local save may take: this long, plus its size at this throughput
LOCAL_WRITE_S, LOCAL_BYTES_PER_S = 120.0, 2e6
#: a save of the tracked objects alone
NO_CONTEXT = SaveContext()


def save_task(snapshot: Snapshot, position: Position, *, generation: int, created_at: float,
              meta: Mapping[str, Any], before_commit: Callable[[], None],
              buffers: HostBuffers) -> SaveTask:
    """What the writer commits: ``snapshot``, taken at ``position``, with its manifest's
    entries; ``before_commit`` runs before it may commit (see :class:`SaveTask`)."""
    return SaveTask(
        snapshot.payload, step=position.step, epoch=position.epoch, batch=position.batch,
        generation=generation, created_at=created_at, meta=meta,
        expected_bytes=snapshot.nbytes, ready=snapshot.ready, before_commit=before_commit,
        buffers=buffers, gradients_of=snapshot.gradients_of)


class Saver:
    """Commits checkpoints of one session: locally now, to the root in the background.

    Args:
        local: the staging store on this runtime's disk.
        store: the job's store under the root.
        statefile: the job's state file.
        keep_last: checkpoints to keep under the root (the spec's policy).
        keep_best: the metric naming the best checkpoint, also kept (the spec's policy).
        fence: this session's lease; a state file holding another one stops all writes.
        clock: the injected clock.
        console: where warnings go.
        metrics: flushed after each upload (it lives under the root too).
        heartbeat_s: how often :meth:`refresh_lease` writes a heartbeat.
        retry_s: how long a failed upload waits before it is retried.
        on_committed: told about each local commit (from the writer's thread).
        on_uploaded: told about each checkpoint that reached the root (from the
            uploader's thread).
        snapshot: the spec's ``checkpoint.snapshot`` (``auto``, ``copy`` or ``fork``).
        stamp: entries every checkpoint's manifest carries (the seed, the spec's
            fingerprint).
        upload_budget: the share of training time uploads may cost
            (:class:`~colabrun.runner.save.pace.UploadPace`).
    """

    def __init__(self, local: CheckpointStore, store: CheckpointStore, statefile: StateFile, *,
                 keep_last: int, keep_best: KeepBest | None = None, fence: Fence, clock: Clock,
                 console: Console | None = None,
                 metrics: MetricsLog | None = None, heartbeat_s: float = 60.0,
                 retry_s: float = 15.0,
                 on_committed: Callable[[CheckpointRecord], None] | None = None,
                 on_uploaded: Callable[[CheckpointRecord], None] | None = None,
                 snapshot: str = "auto", stamp: Mapping[str, Any] | None = None,
                 upload_budget: float = UPLOAD_BUDGET) -> None:
        self.local = local
        self.store = store
        self.statefile = statefile
        self.keep_last = keep_last
        self.fence = fence
        self.clock = clock
        self.console = console or Console()
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.last: CheckpointRecord | None = None
        self.uploaded: CheckpointRecord | None = None
        #: wall time :attr:`uploaded` reached the root
        self.uploaded_at: float | None = None
        #: seconds from a snapshot to its commit under the root (the last measured)
        self.save_s: float | None = None
        #: what the last background write cost
        self.last_write: WriteStats | None = None
        self._local_s: dict[str, float] = {}
        self._step_s: float | None = None
        self._on_committed = on_committed
        self._on_uploaded = on_uploaded
        self._submitted_step: int | None = None
        self._submitted: str | None = None
        self._write_limit_s = LOCAL_WRITE_S
        self._snapshot = snapshot
        self._stamp = dict(stamp or {})
        self._can_fork = fork_available()
        # shared with a writer process where one can be forked
        self._buffers = HostBuffers(shared=self._can_fork)
        self.writer = Writer(local, on_committed=self._committed, keep=KEEP_LOCAL,
                             protected=lambda: self.uploader.current, clock=clock)
        self._last_beat = clock.monotonic()
        self._notices = RootNotices(self.console, local_dir=local.dir, root_dir=store.dir)
        # refreshed on the uploader's thread, paced by refresh_lease: never between
        # batches on the training thread (docs/concepts.md#the-lease)
        self.lease = LeaseKeeper(statefile, fence, interval_s=heartbeat_s, clock=clock,
                                 on_problem=self._notices.lease_problem)
        self._publisher = Publisher(local, store, statefile, fence, clock, keep_last, metrics,
                                    keep_best)
        self.uploader = Uploader(self._upload, on_failure=self._notices.upload_failed,
                                 on_recovery=self._on_recovery, clock=clock, retry_s=retry_s,
                                 heartbeat=self.lease.refresh,
                                 pace=UploadPace(budget=upload_budget))
        self.uploader.start()

    def ready(self) -> None:
        """Wait for the save in flight (so its snapshot buffers may be reused).

        Raises:
            LeaseLost: an earlier upload found the job taken over.
            Exception: the last background write failed (raised at the next save).
        """
        self._raise_fatal()
        if not self.writer.wait(self._write_limit_s):
            raise StorageTimeout(
                f"a save to {self.local.dir} did not finish within {self._write_limit_s:.0f} s; "
                "this runtime's disk may be hanging or full (check `df -h /tmp`)")
        self._raise_fatal()

    @property
    def newest_name(self) -> str | None:
        """The newest save's checkpoint name: committed, or the one being written
        (named as it will be committed, unless that name is taken)."""
        if self.writer.busy and self._submitted is not None:
            return self._submitted
        return self.last.name if self.last is not None else self._submitted

    @property
    def busy(self) -> bool:
        """Whether a save is still being written locally."""
        return self.writer.busy

    def durability(self) -> Durability:
        """The newest save (even in flight) and the newest under the root."""
        uploaded = self.uploaded
        return Durability(self._submitted_step, uploaded.step if uploaded else None,
                          self.uploaded_at)

    def observe_step(self, work_s: float, *, writing: bool) -> None:
        """A training step took ``work_s`` (without a save's stall): paces the uploads;
        ``writing``: it paid for a save (its toll, not an upload's)."""
        self.uploader.observe_step(work_s, writing=writing)

    @property
    def upload_ready(self) -> bool:
        """Whether a checkpoint committed now would start uploading at once (also while
        the root is failing: local saves then go on at their own pace)."""
        return self.uploader.ready

    @property
    def uploading(self) -> bool:
        """Whether an upload to the root runs now."""
        return self.uploader.current is not None

    def save(self, tracked: Mapping[str, Stateful], position: Position, reason: str, *,
             context: SaveContext = NO_CONTEXT, step_s: float | None = None) -> SaveReceipt:
        """Snapshot ``tracked`` and hand it to the background writer; its upload
        follows its commit. Waits first for the save in flight (one at most: its
        buffers are reused), and chooses how the snapshot is taken and written.

        Args:
            tracked: the objects to save (their ``state_dict()``).
            position: where the loop is: the checkpoint's step, epoch and batch.
            reason: why it is taken (``epoch_end``, ``every_steps``, ``final``...).
            context: what it holds besides the objects.
            step_s: the last step's duration, learned with the upload.

        Returns:
            Its name, how long the caller was blocked, whether a writer process started.

        Raises:
            LeaseLost: an earlier upload found the job taken over.
            StorageTimeout: the save in flight did not finish in time.
            Exception: the last background write failed (raised at the next save).
        """
        started = self.clock.monotonic()
        self.ready()
        snapshot = take_snapshot(tracked, context.state, requested=self._snapshot,
                                 buffers=self._buffers, can_fork=self._can_fork)
        self._step_s = step_s
        self._submitted = checkpoint_name(position.step, self.fence.generation)
        self._submitted_step = position.step
        self._write_limit_s = LOCAL_WRITE_S + snapshot.nbytes / LOCAL_BYTES_PER_S
        meta = checkpoint_meta(tracked, reason, context, stamp=self._stamp)
        task = save_task(snapshot, position, generation=self.fence.generation,
                         created_at=self.clock.time(), meta=meta,
                         before_commit=self._keep_metrics, buffers=self._buffers)
        started_writer = self.writer.submit(task, mode=snapshot.mode)
        return SaveReceipt(self._submitted, self.clock.monotonic() - started, started_writer)

    def _keep_metrics(self) -> None:
        """The steps a checkpoint covers are logged (locally) before it commits."""
        if self.metrics is not None:
            self.metrics.keep_locally()

    def _committed(self, manifest: Manifest, stats: WriteStats) -> None:
        """From the writer's thread: a checkpoint is committed locally."""
        self._local_s[manifest.name] = stats.write_s
        self.last_write = stats
        self.last = manifest.record()
        self.local.on_point(COMMITTED_POINT)
        self.uploader.submit(manifest.name)
        if self._on_committed is not None:
            self._on_committed(self.last)

    def finish(self, timeout_s: float = 600.0) -> bool:
        """Wait for the writes and uploads; True when the newest checkpoint is under the root."""
        self.ready()
        done = self.uploader.wait_idle(timeout_s)
        self._raise_fatal()
        return done

    def close(self, wait_s: float = 60.0) -> None:
        """However training ended, let the save in flight commit and the newest checkpoint
        reach the root (each for up to ``wait_s``; nothing is lost), then stop the threads."""
        if self.writer.wait(wait_s):
            self.writer.close()
        if self.uploader.fatal is None:
            self.uploader.wait_idle(wait_s)
        self.uploader.stop()

    @property
    def is_durable(self) -> bool:
        """Whether the newest checkpoint reached the root."""
        return self.last is None or (
            self.uploaded is not None and self.uploaded.step >= self.last.step)

    def refresh_lease(self) -> None:
        """Write a heartbeat when the last one is ``heartbeat_s`` old (best effort).

        Raises:
            LeaseLost: another runner took the job over.
        """
        self._raise_fatal()
        if self.clock.monotonic() - self._last_beat < self.heartbeat_s:
            return
        self._last_beat = self.clock.monotonic()
        self.uploader.beat()  # on the uploader's thread: a hung root must not stall the loop

    # -- the uploader's side -------------------------------------------------------

    def _upload(self, name: str) -> None:
        uploaded = self._publisher.upload(name, local_s=self._local_s.get(name, 0.0),
                                          step_s=self._step_s, fresh=name in self._local_s,
                                          on_copied=self.uploader.copied)
        self._last_beat = self.clock.monotonic()
        self.save_s, self.uploaded = uploaded.save_s, uploaded.record
        self.uploaded_at = self.clock.time()
        if self._on_uploaded is not None:
            self._on_uploaded(uploaded.record)
        self._publisher.rotate(uploaded)
        self.console.flush_log()  # the job log rides along with uploads (best effort)

    def upload_later(self, name: str) -> None:
        """Queue a local checkpoint the root does not have (a resume from a local copy)."""
        self.uploader.submit(name)

    def _on_recovery(self) -> None:
        """From the uploader's thread: an upload succeeded after failures."""
        self._notices.storage_back(self.uploaded)

    def _raise_fatal(self) -> None:
        if self.uploader.fatal is not None:
            raise self.uploader.fatal
        self.writer.raise_error()
