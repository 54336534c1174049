"""The job's metrics log, ``metrics.jsonl``: one JSON object per record.

Records are buffered and appended at checkpoint boundaries and at the end.
After a crash, the steps redone by the next session are logged again;
:func:`read_metrics` keeps, for each step and set of metric names, the record
written last, so the redone steps replace the lost session's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.errors import StorageError
from state.storage import Storage

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Buffered appends to ``job_dir/metrics.jsonl`` through the storage edge."""

    def __init__(self, job_dir: Path, storage: Storage) -> None:
        self.path = job_dir / METRICS_NAME
        self.storage = storage
        self._pending: list[str] = []
        self._lock = threading.Lock()  # the loop appends, the uploader flushes

    def append(self, record: Mapping[str, Any]) -> None:
        """Buffer one record."""
        with self._lock:
            self._pending.append(json.dumps(record, sort_keys=True))

    def flush(self) -> None:
        """Append the buffered records; on a storage error they stay buffered.

        Raises:
            StorageError: the root failed (the records are kept for the next flush).
        """
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            self.storage.append_bytes(self.path, ("\n".join(lines) + "\n").encode())
        except StorageError:
            with self._lock:
                self._pending = lines + self._pending
            raise


BOOKKEEPING = frozenset({"step", "epoch", "session", "time"})


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log in step order, redone steps counted once.

    Torn lines (a crash mid-append) are skipped.
    """
    if not path.exists():
        return []
    latest: dict[tuple[int, frozenset[str]], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[(int(record.get("step", 0)), frozenset(record) - BOOKKEEPING)] = record
    return [latest[key] for key in sorted(latest, key=lambda k: (k[0], sorted(k[1])))]
