"""An exception raised in the worker, carried to the supervisor as itself.

The training runs in a worker process (docs/concepts.md#supervisor-and-worker); what it
raised is re-raised by the supervisor's caller, so ``except HandleError`` and
``except QuotaError as e: e.used_bytes`` must work there as in-process. The worker
cloudpickles the exception (class, args and attributes) and checks the round trip;
the supervisor loads it back.

The fallback, when that fails (a constructor that pickle cannot call again, an attribute
that does not pickle, a class the supervisor does not have): a :class:`RemoteError` that
names the original class and keeps its message, the ``repr`` of each attribute, the
worker's traceback and why the original could not come. It is no ``ColabrunError``, so a
session wraps it in a ``TrainingError`` like any foreign exception, and the exit code,
carried separately, is kept.

The supervisor never imports a module to read an error: a user's module may touch CUDA
at import, and the supervisor must never initialise it (docs/concepts.md#supervisor-and-worker).
An exception whose class lives in a module not imported there already falls back.
"""

from __future__ import annotations

import io
import pickle
import sys
import traceback as tb
from dataclasses import dataclass

import cloudpickle


@dataclass(frozen=True)
class ErrorReport:
    """What the worker sends about an exception.

    ``pickled`` is the exception cloudpickled (``None`` when its round trip failed in the
    worker, ``why_not`` then says why); the other fields describe it either way.
    """

    type_name: str
    message: str
    traceback: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    pickled: bytes | None = None
    why_not: str = ""


class RemoteError(Exception):
    """An exception of the worker that could not be re-created in the supervisor.

    Args:
        type_name: the original's ``module.QualName``.
        message: ``str()`` of the original.
        traceback: the worker's formatted traceback.
        fields: ``(name, repr)`` of each of the original's attributes.
        why_not: why the original could not be sent or loaded.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "",
                 fields: tuple[tuple[str, str], ...] = (), why_not: str = "") -> None:
        super().__init__(type_name, message, traceback, fields, why_not)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.fields = dict(fields)
        self.why_not = why_not

    def __str__(self) -> str:
        return (f"{self.type_name}: {self.message} (raised in the worker; it could not be "
                f"re-created here as itself: {self.why_not})")


def report_error(error: BaseException) -> ErrorReport:
    """Describe ``error`` for the supervisor, pickled when it survives a round trip.

    Args:
        error: what the training raised, in the worker.

    Returns:
        The report; never raises, whatever the exception's ``__reduce__`` does.
    """
    kind = type(error)
    pickled, why_not = _round_trip(error)
    return ErrorReport(
        type_name=f"{kind.__module__}.{kind.__qualname__}", message=str(error),
        traceback="".join(tb.format_exception(kind, error, error.__traceback__)),
        fields=tuple((name, _safe_repr(value)) for name, value in vars(error).items()),
        pickled=pickled, why_not=why_not)


def restore_error(report: ErrorReport) -> BaseException:
    """The worker's exception as itself, else a :class:`RemoteError` describing it.

    Args:
        report: what the worker sent.

    Returns:
        The exception (not raised).
    """
    why_not = report.why_not
    if report.pickled is not None:
        try:
            loaded = _NoImportUnpickler(io.BytesIO(report.pickled)).load()
        except Exception as exc:
            why_not = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(loaded, BaseException):
                return loaded
            why_not = f"it loaded as a {type(loaded).__name__}, not an exception"
    return RemoteError(report.type_name, report.message, report.traceback, report.fields,
                       why_not)


def _round_trip(error: BaseException) -> tuple[bytes | None, str]:
    """``error`` cloudpickled, if it also loads back as the same class; else why not."""
    try:
        blob = cloudpickle.dumps(error)
        back = cloudpickle.loads(blob)
    except Exception as exc:  # a constructor pickle cannot call again, an unpicklable field
        return None, f"{type(exc).__name__}: {exc}"
    if type(back) is not type(error):
        return None, f"it pickles as a {type(back).__name__}"
    return blob, ""


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a user's __repr__ may raise too
        return f"<unrepresentable: {type(exc).__name__}>"


class _NoImportUnpickler(pickle.Unpickler):
    """Loads only classes of modules already imported (see the module's docstring)."""

    def find_class(self, module: str, name: str) -> object:
        if module not in sys.modules:
            raise pickle.UnpicklingError(
                f"its class needs module {module!r}, which the supervisor does not import")
        return super().find_class(module, name)
