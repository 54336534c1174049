"""Retries, timeouts and error translation: how one storage call survives a dying mount.

A Drive mount (docs/colab.md#drive-pitfalls) fails in two ways, and each call of
:class:`colabrun.state.storage.Storage` is guarded against both:

* **transient errors** are retried with exponential backoff (tenacity):
  ``EIO``, ``ENOTCONN`` (107, "Transport endpoint is not connected"),
  ``ETIMEDOUT``, ``EAGAIN``;
* **hangs** meet a timeout per try: the call runs in a daemon thread, and if it
  has not returned in time the caller gets :class:`StorageTimeout` (the stuck
  thread is abandoned; nothing else can be done to a thread blocked in the
  kernel).

After the last try an ``OSError`` is translated into :class:`StorageError`,
whose message names the path, the errno and what to check (the errors are
drawn in :mod:`colabrun.jobs.errors`: ``StorageTimeout`` is a ``StorageError``).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
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
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=10 * backoff_s),
        reraise=True,
        sleep=sleep,
    )
    try:
        result: T = (retrying(fn) if limit_s is None
                     else retrying(run_with_timeout, what, path, fn, limit_s))
        return result
    except StorageError:
        raise
    except OSError as exc:
        raise translate(what, path, exc, tries=attempts) from exc


def run_with_timeout(what: str, path: Path, fn: Callable[[], T], limit_s: float) -> T:
    """Run ``fn`` in a daemon thread, and give up waiting after ``limit_s``.

    Args:
        what: the operation, for the message and the thread's name.
        path: the path it works on, for the message.
        fn: the call.
        limit_s: how long to wait for it.

    Returns:
        What ``fn`` returned.

    Raises:
        StorageTimeout: ``fn`` is still running (its thread is abandoned).
        BaseException: whatever ``fn`` raised, raised again here.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"colabrun-io-{what}", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise StorageTimeout(
            f"{what} {path} did not finish within {limit_s:g} s; the storage may be hanging "
            "(on Colab: is Google Drive still mounted? try `ls /content/drive/MyDrive`)"
        )
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
