"""The uploader: a daemon thread that copies the newest local checkpoint to the root.

Durable first: the next upload starts as soon as the previous one ends, unless uploads
measurably slow training beyond their budget (:class:`~colabrun.runner.save.pace.UploadPace`);
a session's end hurries it. The next save need not wait for the end, only for the
checkpoint's commit under the root (:meth:`Uploader.copied`): its local write overlaps
the record and the rotation that follow, and its upload starts as they end. A failed
upload is retried every ``retry_s`` until the root is back; a newer submission replaces the
one waiting. The thread's body is one
:meth:`Uploader.tick`, which says what it did as an :class:`UploadOutcome`;
problems reach the owner as data (``on_failure``, :attr:`Uploader.fatal`), never
raised inside the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum

from colabrun.jobs.errors import ColabrunError
from colabrun.runner.clock import Clock, SystemClock
from colabrun.runner.save.pace import UploadPace
from colabrun.state.lease import LeaseLost

#: how often :meth:`Uploader.wait_idle` looks whether an upload failed (seconds)
WAIT_POLL_S = 0.05
#: how long :meth:`Uploader.stop` waits for the thread (seconds)
JOIN_TIMEOUT_S = 5.0


class UploadOutcome(str, Enum):
    """What one :meth:`Uploader.tick` did."""

    IDLE = "idle"  # nothing was pending
    PACED = "paced"  # something is pending, not due yet
    UPLOADED = "uploaded"
    FAILED = "failed"  # to be retried
    STOPPED = "stopped"  # for good: see Uploader.fatal


class Uploader:
    """Uploads the newest submitted checkpoint, retrying on failure.

    Args:
        upload: copies one local checkpoint (by name) to the root; raises on failure.
        on_failure: told about each failed upload (an error, as data).
        on_recovery: told when an upload succeeds after failures.
        clock: the injected clock (pacing and waits).
        retry_s: how long to wait before retrying a failed upload.
        heartbeat: writes a lease heartbeat, when :meth:`beat` asks for one.
        pace: how long the next upload waits after one ended (newer checkpoints replace
            the one waiting), unless :meth:`hurry` (or :meth:`wait_idle`) hurries it; fed
            by :meth:`observe_step`.
    """

    def __init__(self, upload: Callable[[str], None], *,
                 on_failure: Callable[[BaseException], None],
                 on_recovery: Callable[[], None], clock: Clock | None = None,
                 retry_s: float = 15.0, heartbeat: Callable[[], None] | None = None,
                 pace: UploadPace | None = None) -> None:
        self._upload = upload
        self._on_failure = on_failure
        self._on_recovery = on_recovery
        self._clock = clock or SystemClock()
        self.retry_s = retry_s
        self._heartbeat = heartbeat
        self.pace = pace or UploadPace()
        self._beat_due = False
        self._not_before = self._clock.monotonic()
        self._hurry = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: str | None = None
        self.current: str | None = None
        self._copied = False  # the current upload is committed under the root
        self.failing = False
        self.failures = 0
        self.fatal: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="colabrun-uploader", daemon=True)

    def start(self) -> None:
        """Start the thread (a test may drive :meth:`tick` itself instead)."""
        self._thread.start()

    def submit(self, name: str) -> None:
        """Upload ``name`` next (a newer submission replaces an older one not yet begun)."""
        with self._lock:
            self._pending = name
            self._idle.clear()
        self._wake.set()

    def copied(self) -> None:
        """From the upload function: the checkpoint it uploads is committed under the root;
        what is left (its record in ``state.json``, the rotation) ends soon."""
        with self._lock:
            self._copied = True

    @property
    def ready(self) -> bool:
        """Whether a checkpoint saved now would be uploaded as soon as it is committed
        locally: nothing waiting, and nothing in flight with the pace's rest over, or an
        upload in flight already committed under the root (:meth:`copied`) and no probe of
        clean steps due after it; also while failing (the root is away: nothing to wait
        for) or stopped."""
        if self.failing or self.fatal is not None:
            return True
        with self._lock:
            if self._pending is not None:
                return False
            if self.current is not None:
                return self._copied and not self.pace.probe_due
            return self._hurry or self._clock.monotonic() >= self._not_before

    def observe_step(self, step_s: float, *, writing: bool) -> None:
        """A training step took ``step_s``; ``writing``: it paid for a local save (written
        meanwhile or just before), whose toll it is."""
        with self._lock:
            self.pace.observe_step(step_s, uploading=self.current is not None,
                                   writing=writing)

    def beat(self) -> None:
        """Ask for a lease heartbeat at the thread's next round."""
        self._beat_due = True
        self._wake.set()

    def hurry(self) -> None:
        """From now on, upload what is pending at once, unpaced (a session ends)."""
        self._hurry = True
        self._wake.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Upload what is pending now, unpaced, and wait for it.

        Returns:
            Whether it reached the root: False on timeout (on the injected clock), or as
            soon as an upload fails (the storage is failing: no use waiting out the
            retries), or once the uploader stopped for good (:attr:`fatal`).
        """
        self.hurry()
        failures = self.failures
        deadline = self._clock.monotonic() + timeout_s
        while not self._idle.wait(min(WAIT_POLL_S, max(0.0, deadline - self._clock.monotonic()))):
            if self.failures > failures or self.fatal is not None:
                return False
            if self._clock.monotonic() >= deadline:
                return False
        return not self.failing and self.fatal is None

    def stop(self) -> None:
        """Stop the thread (an upload in progress is abandoned, never half-committed)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=JOIN_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._sleep_s())
            self._wake.clear()
            if not self._stop.is_set():
                self.tick()

    def _sleep_s(self) -> float | None:
        """How long the thread may sleep before its next round (``None``: until woken)."""
        if self.failing:
            return self.retry_s
        if self._pending is not None:  # paced: due at _not_before
            return max(0.0, self._not_before - self._clock.monotonic())
        return None

    def tick(self) -> UploadOutcome:
        """Beat if asked; upload what is pending and due, if anything.

        Returns:
            What this round did; problems are reported as data, never raised.
        """
        if not self._beat_if_asked():
            return UploadOutcome.STOPPED
        with self._lock:
            name = self._pending
            if name is None:
                self._idle.set()
                return UploadOutcome.IDLE
            if self._is_paced():
                return UploadOutcome.PACED  # the thread comes back when it is due
            self._pending, self.current, self._copied = None, name, False
        return self._upload_one(name)

    def _beat_if_asked(self) -> bool:
        """Write the heartbeat asked for; False when the lease is lost (stopped for good)."""
        if not self._beat_due or self._heartbeat is None:
            return True
        self._beat_due = False
        try:
            self._heartbeat()
        except LeaseLost as exc:
            self._fail_for_good(exc)
            return False
        return True

    def _is_paced(self) -> bool:
        return (not self._hurry and not self.failing
                and self._clock.monotonic() < self._not_before)

    def _upload_one(self, name: str) -> UploadOutcome:
        started = self._clock.monotonic()
        try:
            self._upload(name)
        except LeaseLost as exc:
            return self._fail_for_good(exc)
        except (ColabrunError, OSError) as exc:
            return self._failed(name, exc)
        except Exception as exc:  # a bug, or an injected fault: surfaces at the next save
            return self._fail_for_good(exc)
        finally:
            now = self._clock.monotonic()
            with self._lock:
                self.current = None
                self._not_before = now + self.pace.rest_s(now - started)
        if self.failing:
            self.failing, self.failures = False, 0
            self._on_recovery()
        with self._lock:
            if self._pending is None:
                self._idle.set()
            else:
                self._wake.set()
        return UploadOutcome.UPLOADED

    def _failed(self, name: str, error: BaseException) -> UploadOutcome:
        self.failing = True
        self.failures += 1
        with self._lock:
            self._pending = self._pending or name  # retry it unless a newer one came
        self._on_failure(error)
        return UploadOutcome.FAILED

    def _fail_for_good(self, error: BaseException) -> UploadOutcome:
        self.fatal = error
        self._stop.set()
        self._idle.set()
        return UploadOutcome.STOPPED
