"""The job's metrics log, ``metrics.jsonl``: one JSON object per record.

Records are buffered and appended at checkpoint boundaries and at the end.
After a crash, the steps redone by the next session are logged again;
:func:`read_metrics` keeps, for each step and set of metric names, the record
written last, so the redone steps replace the lost session's.
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
