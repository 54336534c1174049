"""The job's metrics log, ``metrics.jsonl``: one JSON object per record.

Records are buffered and appended at checkpoint boundaries and at the end.
After a crash, the records of the redone steps appear twice; readers keep the
last record of each (session, step) and :func:`read_metrics` does so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from state.storage import Storage

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Buffered appends to ``job_dir/metrics.jsonl`` through the storage edge."""

    def __init__(self, job_dir: Path, storage: Storage) -> None:
        self.path = job_dir / METRICS_NAME
        self.storage = storage
        self._pending: list[str] = []

    def append(self, record: Mapping[str, Any]) -> None:
        """Buffer one record."""
        self._pending.append(json.dumps(record, sort_keys=True))

    def flush(self) -> None:
        """Append the buffered records."""
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode()
        self._pending.clear()
        self.storage.append_bytes(self.path, data)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics log, torn last lines skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-append
    return records
