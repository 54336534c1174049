"""What the person watching is told about the root while training goes on.

An outage of the storage is said once, when the first upload fails (F9: a lost Drive mount),
with what it means (progress is not durable) and what to check; its end is said too. A lease
that could not be refreshed is said once. Each is told from a background thread (the
uploader's, the lease keeper's), as data: none stops training.
"""

from __future__ import annotations

from pathlib import Path

from colabrun.runner.display.console import Console
from colabrun.runner.watch.lease_keeper import LeaseReport, Refresh
from colabrun.state.model import CheckpointRecord


class RootNotices:
    """The warnings of one session about its root.

    Args:
        console: where they go.
        local_dir: the local staging store's folder (where checkpoints wait meanwhile).
        root_dir: the job's store under the root.
    """

    def __init__(self, console: Console, *, local_dir: Path, root_dir: Path) -> None:
        self.console = console
        self.local_dir = local_dir
        self.root_dir = root_dir
        self._outage = False
        self._lease_warned = False

    def upload_failed(self, error: BaseException) -> None:
        """An upload failed: warn, at the first failure of an outage only."""
        if self._outage:  # said once per outage; the recovery is said too
            return
        self._outage = True
        self.console.warn(
            f"could not upload to {self.root_dir}: {error}. Training goes on with "
            f"local checkpoints in {self.local_dir}, but progress is NOT durable until the "
            "storage is back (on Colab: check that Drive is mounted); retrying")

    def storage_back(self, uploaded: CheckpointRecord | None) -> None:
        """An upload succeeded after failures: ``uploaded`` reached the root."""
        self._outage = False
        self.console.info(f"the storage is back: {uploaded.name if uploaded else ''} "
                          f"uploaded to {self.root_dir}")

    def lease_problem(self, report: LeaseReport) -> None:
        """A heartbeat could not be written: warn once (the lease keeper tries again)."""
        if report.outcome is Refresh.STORAGE_FAILED and not self._lease_warned:
            self.console.warn(f"cannot refresh the lease ({report.error}); training goes on")
            self._lease_warned = True
