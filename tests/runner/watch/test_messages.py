"""Tier 1 for the supervisor-worker wire: typed messages, user values, and exceptions
that keep their class and fields across the process boundary (or fall back, saying why).

Each message goes through ``pickle`` exactly as ``Connection.send`` sends it.
"""

from __future__ import annotations

import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from colabrun.jobs.errors import ColabrunError, HandleError
from colabrun.runner.watch.messages import (
    Beat,
    CheckpointRequest,
    Ended,
    Kill,
    KillReason,
    Output,
    Pickled,
    StopRequest,
    phase_of,
)
from colabrun.runner.watch.remote_error import (
    ErrorReport,
    RemoteError,
    report_error,
    restore_error,
)
from colabrun.runner.watch.restarts import Exit
from tests.runner.watch.raising_jobs import KeywordError, QuotaError


def across(message: Any) -> Any:
    """``message`` as the other process receives it."""
    return pickle.loads(pickle.dumps(message))


def raised(error: BaseException) -> BaseException:
    """``error`` with a traceback, as training code raises it."""
    try:
        raise error
    except BaseException as caught:
        return caught


def crossed(error: BaseException) -> BaseException:
    """``error`` sent in an :class:`Ended` and restored on the other side."""
    ended = across(Ended(Exit.FAILED, str(error), error=report_error(raised(error))))
    assert ended.error is not None
    return restore_error(ended.error)


@pytest.mark.parametrize("message", [
    Output("epoch 1: loss 0.5"),
    Beat(step=3, epoch=1, phase="save", step_s=0.2, last_save="step-3", batch=2,
         batches_in_epoch=8, epochs_total=4),
    Ended(Exit.STOPPED, "deadline", exit_code=0, micro_batches=2, value=Pickled.of([1, 2])),
    StopRequest("stop requested"),
    CheckpointRequest(),
])
def test_messages_cross_as_themselves(message: Any) -> None:
    assert across(message) == message


def test_a_beat_s_progress_key_is_step_epoch_and_phase() -> None:
    beat = Beat(step=3, epoch=1, phase="train", step_s=0.1)
    assert beat.key == (3, 1, "train")
    assert Beat(step=3, epoch=1, phase="train", step_s=9.0).key == beat.key


def test_phases_are_a_closed_set() -> None:
    assert [phase_of(p) for p in ("setup", "load", "train", "save", "between")] == [
        "setup", "load", "train", "save", "between"]
    assert phase_of("bogus") == "train", "an unknown phase is never exempt from the watch"


def test_a_kill_says_why() -> None:
    assert Kill.because(KillReason.INTERRUPTED_TWICE).detail == "interrupted twice"
    assert Kill(KillReason.HUNG, "hung for 21 s at step 30").reason is KillReason.HUNG


def test_a_value_that_cannot_be_pickled_is_dropped_not_fatal() -> None:
    assert Pickled.of(threading.Lock()) is None
    assert across(Pickled.of({"acc": 0.9})).load() == {"acc": 0.9}
    assert Pickled(b"not a pickle").load() is None


def test_a_colabrun_error_keeps_its_class_and_fields() -> None:
    error = crossed(QuotaError("the scratch disk is full", used_bytes=123))
    assert type(error) is QuotaError
    assert isinstance(error, ColabrunError) and isinstance(error, RuntimeError)
    assert str(error) == "the scratch disk is full"
    assert error.used_bytes == 123 and error.exit_code == 5


def test_except_handle_error_works_in_the_supervisor() -> None:
    with pytest.raises(HandleError, match="outside run.batches"):
        raise crossed(HandleError("run.step() called outside run.batches()"))


def test_a_foreign_exception_comes_back_too() -> None:
    error = crossed(FileNotFoundError(2, "No such file", "/data/x.npy"))
    assert isinstance(error, FileNotFoundError)
    assert (error.errno, error.filename) == (2, "/data/x.npy")


def test_an_exception_class_from_a_notebook_cell_comes_back_as_itself() -> None:
    class CellError(ValueError):  # a local class: cloudpickled by value, like __main__'s
        pass

    error = crossed(CellError("bad shape"))
    assert type(error) is CellError and str(error) == "bad shape"


def test_a_constructor_pickle_cannot_call_falls_back_to_a_remote_error() -> None:
    report = report_error(raised(KeywordError("shard unreadable", shard=7)))
    assert report.pickled is None and "TypeError" in report.why_not
    error = restore_error(across(report))
    assert isinstance(error, RemoteError) and not isinstance(error, ColabrunError)
    assert error.type_name == "tests.runner.watch.raising_jobs.KeywordError"
    assert error.message == "shard unreadable" and error.fields == {"shard": "7"}
    assert "raise error" in error.traceback, "the worker's traceback is kept"
    assert str(error).startswith("tests.runner.watch.raising_jobs.KeywordError: shard "
                                 "unreadable (raised in the worker; it could not be "
                                 "re-created here as itself: TypeError")
    assert across(error).fields == error.fields, "the fallback itself pickles"


def test_an_unpicklable_field_falls_back() -> None:
    error = ValueError("locked")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    restored = crossed(error)
    assert isinstance(restored, RemoteError) and restored.type_name == "builtins.ValueError"
    assert "lock" in restored.fields and "pickle" in restored.why_not


def test_the_supervisor_imports_no_module_to_read_an_error(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    (tmp_path / "user_errors_module.py").write_text(
        "class DataError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_errors_module  # type: ignore[import-not-found]

    report = report_error(raised(user_errors_module.DataError("bad row 7")))
    assert report.pickled is not None
    del sys.modules["user_errors_module"]  # as in a supervisor that never imported it
    error = restore_error(report)
    assert "user_errors_module" not in sys.modules, "not imported to read the error"
    assert isinstance(error, RemoteError) and error.message == "bad row 7"
    assert "needs module 'user_errors_module'" in error.why_not


def test_a_report_that_is_not_an_exception_falls_back() -> None:
    report = ErrorReport(type_name="x.Y", message="m", pickled=pickle.dumps(42))
    error = restore_error(report)
    assert isinstance(error, RemoteError) and "not an exception" in error.why_not
