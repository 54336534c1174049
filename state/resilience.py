"""Retries, timeouts and error translation: how one storage call survives a dying mount.

A Drive mount (docs/colab.md#drive-pitfalls) fails in two ways, and each call of
:class:`colabrun.state.storage.Storage` is guarded against both:

* **transient errors** are retried with exponential backoff (tenacity):
  ``EIO``, ``ENOTCONN`` (107, "Transport endpoint is not connected"),
  ``ETIMEDOUT``, ``EAGAIN``;
* **hangs** meet a timeout per try: the call runs in a daemon thread (a
  :class:`Lane`, kept for the next call), and if it has not returned in time the
  caller gets :class:`StorageTimeout` (the stuck thread is abandoned; nothing else
  can be done to a thread blocked in the kernel).

A call that succeeds at once, nearly every one, builds no retry machinery: an upload
makes about 17 calls, and a thread started and a tenacity ``Retrying`` built for each
cost ~0.15 ms of the training process's CPU apiece, taken from its steps while it holds
the GIL (docs/concepts.md#the-adaptive-cadence). For the same reason a timed call made
inside another (:meth:`colabrun.state.storage.Storage.batch`: the calls committing a
checkpoint under the root) runs inline in the outer call's lane, with its own retries and
its own time limit, counted from its own start: each handoff to a lane and back wakes a
thread that must take the GIL from the training loop.

After the last try an ``OSError`` is translated into :class:`StorageError`,
whose message names the path, the errno and what to check (the errors are
drawn in :mod:`colabrun.jobs.errors`: ``StorageTimeout`` is a ``StorageError``).
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from colabrun.jobs.errors import StorageError, StorageTimeout

T = TypeVar("T")

TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN})


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying (a flaky mount, not a wrong path).

    Args:
        exc: what a try raised.

    Returns:
        ``True`` for an ``OSError`` whose errno is one of :data:`TRANSIENT_ERRNOS`.
    """
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def try_limit_s(default_s: float | None, timeout_s: float | None) -> float | None:
    """The timeout of one try: none at all without a default, else the call's own
    (``timeout_s``) or the default.

    Args:
        default_s: the storage's timeout per call (``None``: calls are never timed).
        timeout_s: this call's own, if it has one (a bulk write's, by its size).

    Returns:
        Seconds, or ``None`` for a call run untimed in the caller's thread.
    """
    if default_s is None:
        return None
    return default_s if timeout_s is None else timeout_s


def call_resilient(what: str, path: Path, fn: Callable[[], T], *, attempts: int,
                   backoff_s: float, sleep: Callable[[float], None], limit_s: float | None
                   ) -> T:
    """Run ``fn`` with retries on transient errors and a timeout per try.

    Args:
        what: the operation, for messages and the thread's name (``"read"``).
        path: the path it works on, for messages.
        fn: one try; it must be repeatable.
        attempts: tries in all.
        backoff_s: the first wait between tries; each next one doubles, up to ten times it.
        sleep: how waits are made (a fake clock's in tests).
        limit_s: the timeout of each try (:func:`try_limit_s`); ``None``: untimed.

    Returns:
        What ``fn`` returned.

    Raises:
        StorageTimeout: one try did not return in time.
        StorageError: the last try failed with an ``OSError``.
    """
    once: Callable[[], T] = fn if limit_s is None else partial(
        run_with_timeout, what, path, fn, limit_s)
    try:
        try:
            return once()
        except OSError as exc:
            if not is_transient(exc) or attempts <= 1:
                raise
        # the retries: tenacity's, with its first wait taken here (the same schedule as
        # one Retrying over every try: backoff_s, then doubling, up to ten times it)
        sleep(backoff_s)
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(attempts - 1),
            wait=wait_exponential(multiplier=2 * backoff_s, max=10 * backoff_s),
            reraise=True,
            sleep=sleep,
        )
        result: T = retrying(once)
        return result
    except StorageError:
        raise
    except OSError as exc:
        raise translate(what, path, exc, tries=attempts) from exc


#: the name of a lane's thread between calls (during one: ``colabrun-io-<what>``)
IDLE_NAME = "colabrun-io-idle"


class Lane:
    """A daemon thread that runs storage calls one at a time, kept between calls.

    Not a ``ThreadPoolExecutor``: its threads are joined at the interpreter's exit, and one
    stuck in a frozen mount would hang the exit for ever. A lane whose call did not return
    in time is abandoned, never reused, and its thread ends once the call does; the calls
    a batch makes after its abandoned one are refused (:func:`run_with_timeout`). Idle
    lanes wait in :data:`_IDLE`.
    """

    def __init__(self) -> None:
        #: when the caller stops waiting (monotonic): each call made inside pushes it to its
        #: own start plus its own limit, so a batch times out only where one call does
        self.deadline = 0.0
        #: the caller gave up waiting
        self.abandoned = False
        self._calls: queue.SimpleQueue[tuple[str, Callable[[], Any], threading.Event,
                                             dict[str, Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=IDLE_NAME, daemon=True).start()

    def _serve(self) -> None:
        _IN_LANE.lane = self
        while True:
            call = self._calls.get()
            if call is None:  # abandoned while idle
                return
            what, fn, done, box = call
            threading.current_thread().name = f"colabrun-io-{what}"  # fault points read it
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the caller
                box["error"] = exc
            if self.abandoned:  # its caller gave up: nobody hands it a call again
                return
            threading.current_thread().name = IDLE_NAME
            done.set()
            del call, fn, done, box  # an idle lane keeps no payload nor what was read

    def run(self, what: str, fn: Callable[[], Any], limit_s: float) -> dict[str, Any] | None:
        """Run ``fn``; its outcome (``value`` or ``error``), or ``None`` once the deadline
        (``limit_s`` from now, pushed further by the calls ``fn`` makes) has passed."""
        done, box = threading.Event(), dict[str, Any]()
        self.deadline = time.monotonic() + limit_s
        self._calls.put((what, fn, done, box))
        while not done.wait(max(0.0, self.deadline - time.monotonic())):
            if time.monotonic() >= self.deadline:
                self.abandoned = True
                self._calls.put(None)  # ends the thread if the call returned meanwhile
                return None
        return box

    def extend(self, limit_s: float) -> None:
        """A call made inside this lane's call starts now, with ``limit_s`` of its own."""
        self.deadline = max(self.deadline, time.monotonic() + limit_s)


_IN_LANE = threading.local()  # ``lane``: the lane whose thread this is
_IDLE: list[Lane] = []
_IDLE_LOCK = threading.Lock()


def _forget_lanes() -> None:
    """In a forked child: the lanes' threads did not come along."""
    global _IDLE_LOCK
    _IDLE.clear()
    _IDLE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_lanes)


def _hanging(what: str, path: Path, limit_s: float) -> StorageTimeout:
    return StorageTimeout(
        f"{what} {path} did not finish within {limit_s:g} s; the storage may be hanging "
        "(on Colab: is Google Drive still mounted? try `ls /content/drive/MyDrive`)"
    )


def run_with_timeout(what: str, path: Path, fn: Callable[[], T], limit_s: float) -> T:
    """Run ``fn`` in a daemon thread (an idle :class:`Lane`, or a new one), and give up
    waiting after ``limit_s``. Within a lane already (a call a batch makes), run it there
    and then, with the same limit: it pushes the lane's deadline to its own start plus
    ``limit_s``; once the lane is abandoned, the batch's next calls are refused.

    Args:
        what: the operation, for the message and the thread's name.
        path: the path it works on, for the message.
        fn: the call.
        limit_s: how long to wait for it.

    Returns:
        What ``fn`` returned.

    Raises:
        StorageTimeout: ``fn`` is still running (its lane is abandoned), or it is a call of
            a batch that timed out.
        BaseException: whatever ``fn`` raised, raised again here.
    """
    inside: Lane | None = getattr(_IN_LANE, "lane", None)
    if inside is not None:
        if inside.abandoned:  # the batch timed out: the rest of it is not done
            raise _hanging(what, path, limit_s)
        inside.extend(limit_s)
        return fn()
    with _IDLE_LOCK:
        lane = _IDLE.pop() if _IDLE else None
    lane = lane or Lane()
    box = lane.run(what, fn, limit_s)
    if box is None:  # the lane is left to its stuck call
        raise _hanging(what, path, limit_s)
    with _IDLE_LOCK:
        _IDLE.append(lane)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def translate(what: str, path: Path, exc: OSError, *, tries: int) -> StorageError:
    """The error a user sees for a failed call: what failed, where, and what to check.

    Args:
        what: the operation (``"write"``).
        path: the path it worked on.
        exc: the last try's error.
        tries: how many tries were made (told only for a transient error).

    Returns:
        A :class:`StorageError` carrying ``exc``'s errno (the caller chains ``exc``).
    """
    hint = "check the path and its permissions"
    if exc.errno in (errno.ENOTCONN, errno.EIO, errno.ETIMEDOUT):
        hint = ("the mount may be gone; on Colab check `ls /content/drive/MyDrive` "
                "and remount Drive if needed")
    elif exc.errno == errno.ENOSPC:
        hint = "the disk is full; free space (on Drive, empty the Trash too)"
    elif exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        hint = "the folder is not writable; choose another root with --root"
    after = f" (after {tries} tries)" if is_transient(exc) else ""
    error = StorageError(f"cannot {what} {path}: {exc.strerror or exc}{after}; {hint}")
    error.errno = exc.errno
    return error
