"""What the person watching is told about the root: an outage once and its end, a lease
that could not be refreshed once."""

from __future__ import annotations

import errno
import io
from pathlib import Path

from colabrun.runner.display.console import Console
from colabrun.runner.save.notices import RootNotices
from colabrun.runner.watch.lease_keeper import LeaseReport, Refresh
from colabrun.state.model import CheckpointRecord


def _notices() -> tuple[RootNotices, io.StringIO]:
    out = io.StringIO()
    notices = RootNotices(Console(out=out), local_dir=Path("/tmp/local/checkpoints"),
                          root_dir=Path("/drive/job/checkpoints"))
    return notices, out


def test_an_outage_is_said_once_with_what_to_check_and_its_end_too() -> None:
    notices, out = _notices()
    for _ in range(3):
        notices.upload_failed(OSError(errno.ENOTCONN, "Transport endpoint is not connected"))
    said = out.getvalue()
    assert said.count("WARNING") == 1
    assert "could not upload to /drive/job/checkpoints" in said
    assert "Transport endpoint is not connected" in said
    assert "/tmp/local/checkpoints" in said and "NOT durable" in said
    assert "Drive is mounted" in said
    record = CheckpointRecord(name="step-000000010-g0001", step=10, epoch=0, batch=10,
                              generation=1, size_bytes=1, sha256="0" * 64, created_at=0.0)
    notices.storage_back(record)
    assert out.getvalue().endswith(
        "the storage is back: step-000000010-g0001 uploaded to /drive/job/checkpoints\n")
    notices.upload_failed(OSError(errno.EIO, "I/O error"))  # a new outage is said again
    assert out.getvalue().count("WARNING") == 2


def test_a_lease_not_refreshed_is_said_once_and_a_lost_one_not_here() -> None:
    notices, out = _notices()
    notices.lease_problem(LeaseReport(Refresh.LOST, at=1.0))  # the owner stops: not a warning
    assert out.getvalue() == ""
    for at in (2.0, 3.0):
        notices.lease_problem(LeaseReport(Refresh.STORAGE_FAILED, at=at,
                                          error=OSError(errno.EIO, "I/O error")))
    said = out.getvalue()
    assert said.count("cannot refresh the lease") == 1 and "I/O error" in said
    assert "training goes on" in said
