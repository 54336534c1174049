"""Saving: commit locally, upload in the background, record, rotate.

The commit protocol (docs/concepts.md#checkpoints-and-the-commit-protocol), in two tiers,
both off the training thread.
:meth:`Saver.save` hands a snapshot to the :class:`~colabrun.runner.save.writer.Writer`,
which commits it to a local staging folder (survives a worker crash on this
runtime); training waits only for the snapshot. The :class:`Uploader` thread
then copies the newest local checkpoint to the root with the same protocol,
and only then is ``state.json`` updated and are old checkpoints rotated.
Uploads are paced by their CPU cost (:data:`UPLOAD_CPU_SHARE`), and hurried
when a session ends. If the root fails or hangs (a lost Drive mount, F9),
training goes on with local checkpoints, the user is told plainly that
progress is not durable, and the upload is retried until the root is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from colabrun.jobs.errors import ColabrunError, StorageTimeout
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.save.snapshot import HostBuffers
from colabrun.runner.save.writer import THREAD, SaveTask, Writer, WriteStats
from colabrun.runner.train.metrics import MetricsLog
from colabrun.state.checkpoints import CheckpointStore, Manifest, checkpoint_name
from colabrun.state.lease import Fence, LeaseLost, check_fence, heartbeat
from colabrun.state.model import CheckpointRecord, JobState
from colabrun.state.rotation import plan_rotation
from colabrun.state.statefile import StateFile
from colabrun.state.transitions import forget_checkpoints, learn_timing, record_checkpoint

#: local checkpoints kept (the writer removes older ones), besides the one being uploaded
KEEP_LOCAL = 2
#: the fault point passed when a save is committed locally, before its upload is queued
COMMITTED_POINT = "save.committed"
#: uploads are paced so that their CPU time stays under this share of the wall time:
#: on a 2-core machine an upload after every local save of a small model (6 ms of CPU,
#: state.json updates included, every 70 ms) made each training step 10% slower
UPLOAD_CPU_SHARE = 0.01
#: how long a local save may take: this long, plus its size at this throughput
LOCAL_WRITE_S, LOCAL_BYTES_PER_S = 120.0, 2e6


class Uploader:
    """Daemon thread: uploads the newest submitted checkpoint, retrying on failure.

    Args:
        upload: copies one local checkpoint (by name) to the root; raises on failure.
        on_failure: told about each failed upload (an error, as data).
        on_recovery: told when an upload succeeds after failures.
        retry_s: how long to wait before retrying a failed upload.
        cpu_share: after an upload that used ``c`` seconds of CPU, the next one waits
            ``c / cpu_share`` seconds (newer checkpoints replace the one waiting),
            unless :meth:`wait_idle` hurries it.
        cpu_clock: CPU seconds used so far by the upload's thread and its I/O threads
            (read on the uploader thread, before and after each upload).
    """

    def __init__(self, upload: Callable[[str], None], *,
                 on_failure: Callable[[BaseException], None],
                 on_recovery: Callable[[], None], retry_s: float = 15.0,
                 heartbeat: Callable[[], None] | None = None,
                 cpu_share: float = UPLOAD_CPU_SHARE,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self._upload = upload
        self._heartbeat = heartbeat
        self._beat_due = False
        self.failures = 0
        self._on_failure = on_failure
        self._on_recovery = on_recovery
        self.retry_s = retry_s
        self.cpu_share = cpu_share
        self._cpu_clock = cpu_clock
        self._not_before = 0.0
        self._hurry = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: str | None = None
        self.current: str | None = None
        self.failing = False
        self.fatal: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="colabrun-uploader", daemon=True)
        self._thread.start()

    def submit(self, name: str) -> None:
        """Upload ``name`` next (a newer submission replaces an older one not yet begun)."""
        with self._lock:
            self._pending = name
            self._idle.clear()
        self._wake.set()

    def beat(self) -> None:
        """Ask for a lease heartbeat at the thread's next round."""
        self._beat_due = True
        self._wake.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Upload what is pending now, unpaced, and wait for it; False on timeout, or as
        soon as an upload fails (the storage is failing: no use waiting out the retries)."""
        self._hurry = True
        failures = self.failures
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while not self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self.failures > failures or self.fatal is not None:
                return False
            if time.monotonic() >= deadline:
                return False
        return not self.failing

    def stop(self) -> None:
        """Stop the thread (an upload in progress is abandoned, never half-committed)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)

    def _fail_for_good(self, error: BaseException) -> None:
        self.fatal = error
        self._stop.set()
        self._idle.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = None
            if self.failing:
                timeout = self.retry_s
            elif self._pending is not None:  # paced: due at _not_before
                timeout = max(0.0, self._not_before - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if not self._stop.is_set():
                self.tick()

    def tick(self) -> None:
        """Beat if asked; upload what is pending, if anything; report outcomes as data."""
        if self._beat_due and self._heartbeat is not None:
            self._beat_due = False
            try:
                self._heartbeat()
            except LeaseLost as exc:
                self._fail_for_good(exc)
                return
        with self._lock:
            name = self._pending
            if name is None:
                self._idle.set()
                return
            if not self._hurry and not self.failing and time.monotonic() < self._not_before:
                return  # paced; the thread comes back when it is due
            self._pending = None
            self.current = name
        cpu = self._cpu_clock()
        try:
            self._upload(name)
        except (ColabrunError, OSError) as exc:
            if isinstance(exc, LeaseLost):
                self._fail_for_good(exc)
                return
            self.failing = True
            self.failures += 1
            with self._lock:
                self._pending = self._pending or name  # retry it unless a newer one came
            self._on_failure(exc)
            return
        except Exception as exc:  # a bug, or an injected fault: surfaces at the next save
            self._fail_for_good(exc)
            return
        finally:
            self.current = None
            self._not_before = time.monotonic() + (self._cpu_clock() - cpu) / self.cpu_share
        if self.failing:
            self.failing = False
            self.failures = 0
            self._on_recovery()
        with self._lock:
            if self._pending is None:
                self._idle.set()
            else:
                self._wake.set()


class Saver:
    """Commits checkpoints of one session: locally now, to the root in the background.

    Args:
        local: the staging store on this runtime's disk.
        store: the job's store under the root.
        statefile: the job's state file.
        keep_last: checkpoints to keep under the root (the spec's policy).
        fence: this session's lease; a state file holding another one stops all writes.
        clock: the injected clock.
        console: where warnings go.
        metrics: flushed after each upload (it lives under the root too).
        heartbeat_s: how often :meth:`refresh_lease` writes a heartbeat.
    """

    def __init__(self, local: CheckpointStore, store: CheckpointStore, statefile: StateFile, *,
                 keep_last: int, fence: Fence, clock: Clock, console: Console | None = None,
                 metrics: MetricsLog | None = None, heartbeat_s: float = 60.0,
                 retry_s: float = 15.0,
                 on_committed: Callable[[CheckpointRecord], None] | None = None) -> None:
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
        #: seconds from a snapshot to its commit under the root (the last measured)
        self.save_s: float | None = None
        #: what the last background write cost
        self.last_write: WriteStats | None = None
        self._local_s: dict[str, float] = {}
        self._step_s: float | None = None
        self._on_committed = on_committed
        self._submitted: str | None = None
        self._write_limit_s = LOCAL_WRITE_S
        self.writer = Writer(local, on_committed=self._committed, keep=KEEP_LOCAL,
                             protected=lambda: self.uploader.current)
        self._last_beat = clock.monotonic()
        self._lease_warned = False
        self.uploader = Uploader(self._upload, on_failure=self._on_failure,
                                 on_recovery=self._on_recovery, retry_s=retry_s,
                                 heartbeat=self._heartbeat, cpu_clock=self._upload_cpu_s)

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

    def save(self, payload: Mapping[str, Any], *, step: int, epoch: int, batch: int,
             meta: Mapping[str, Any], expected_bytes: int = 0, step_s: float | None = None,
             mode: str = THREAD, ready: Callable[[], None] | None = None,
             buffers: HostBuffers | None = None,
             gradients_of: Sequence[torch.Tensor] = ()) -> bool:
        """Hand a snapshot to the background writer; its upload follows its commit.

        Returns whether a writer process was started (a one-time cost in this save).

        Call :meth:`ready` before taking the snapshot. ``mode`` is the writer's
        (``thread`` or ``process`` for a copied snapshot, ``fork`` for live tensors);
        ``buffers``: where a copied snapshot's tensors live; ``gradients_of``: the
        parameters whose gradients a forked writer drops (no checkpoint holds them).
        """
        self.ready()
        self._step_s = step_s
        self._submitted = checkpoint_name(step, self.fence.generation)
        self._write_limit_s = LOCAL_WRITE_S + expected_bytes / LOCAL_BYTES_PER_S
        return self.writer.submit(SaveTask(
            payload, step=step, epoch=epoch, batch=batch, generation=self.fence.generation,
            created_at=self.clock.time(), meta=meta, expected_bytes=expected_bytes,
            ready=ready, before_commit=self._keep_metrics, buffers=buffers,
            gradients_of=gradients_of), mode=mode)

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

    def _heartbeat(self) -> None:
        now = self.clock.time()
        try:
            self.statefile.update(lambda s: heartbeat(s, self.fence, now=now))
        except LeaseLost:
            raise
        except (ColabrunError, OSError) as exc:
            if not self._lease_warned:
                self.console.warn(f"cannot refresh the lease ({exc}); training goes on")
                self._lease_warned = True

    # -- the uploader's side -------------------------------------------------------

    def _upload_cpu_s(self) -> float:
        """CPU seconds uploads have used so far (read on the uploader's thread): its own,
        the root's I/O threads', and those verifying the local source meanwhile."""
        return self.store.storage.cpu_s() + self.local.storage.io_cpu_s

    def _upload(self, name: str) -> None:
        current = self.statefile.read()
        if current is not None:
            check_fence(current, self.fence)
        # Metrics first: once the checkpoint commits, a resume never logs its steps
        # again, so their records must be durable by then. Records of later steps
        # written now are logged again when redone, and readers keep the last.
        self._flush_metrics()
        started = self.clock.monotonic()
        manifest = self.store.upload_from(self.local, name)
        record = manifest.record()
        self.save_s = self._local_s.get(name, 0.0) + self.clock.monotonic() - started
        observed = {"save_s": self.save_s}
        if self._step_s is not None:
            observed["step_s"] = self._step_s
        now = self.clock.time()
        state = self.statefile.update(lambda s: learn_timing(
            record_checkpoint(heartbeat(s, self.fence, now=now), record, now=now),
            now=now, **observed))
        self._last_beat = self.clock.monotonic()
        self.uploaded = record
        self._rotate(state, newest=record.name)
        self.console.flush_log()  # the job log rides along with uploads (best effort)

    def _flush_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.sync()  # a failure fails this upload: it is retried whole

    def upload_later(self, name: str) -> None:
        """Queue a local checkpoint the root does not have (a resume from a local copy)."""
        self.uploader.submit(name)

    def _rotate(self, state: JobState, *, newest: str) -> None:
        doomed = plan_rotation(state.checkpoints, keep_last=self.keep_last, newest_verified=newest)
        if not doomed:
            return
        now = self.clock.time()
        self.statefile.update(
            lambda s: forget_checkpoints(heartbeat(s, self.fence, now=now), doomed, now=now))
        for name in doomed:
            self.store.discard(name)

    def _on_failure(self, error: BaseException) -> None:
        if self.uploader.failures > 1:  # said once per outage; the recovery is said too
            return
        self.console.warn(
            f"could not upload to {self.store.dir}: {error}. Training goes on with "
            f"local checkpoints in {self.local.dir}, but progress is NOT durable until the "
            "storage is back (on Colab: check that Drive is mounted); retrying")

    def _on_recovery(self) -> None:
        self.console.info(f"the storage is back: {self.uploaded.name if self.uploaded else ''} "
                          f"uploaded to {self.store.dir}")

    def _raise_fatal(self) -> None:
        if self.uploader.fatal is not None:
            raise self.uploader.fatal
        self.writer.raise_error()
