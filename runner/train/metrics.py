"""The job's metrics log, ``metrics.jsonl``: one JSON object per record.

Records are buffered, written to a local file (staging, beside the local
checkpoints) at each checkpoint, and synced to the root's file by the
uploader before it commits a checkpoint there: the records of every step a
committed checkpoint covers are durable with it, on this runtime's disk and
under the root. After a crash, the steps redone by the next session are logged again;
:func:`read_metrics` keeps, for each step and set of metric names, the record
written last, so the redone steps replace the lost session's.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from colabrun.state.storage import Storage

METRICS_NAME = "metrics.jsonl"
#: what ``json.dumps(record, sort_keys=True)`` builds at each call, built once (a record a
#: step: the encoder's construction was a quarter of the append)
_ENCODE = json.JSONEncoder(sort_keys=True).encode


class MetricsLog:
    """The job's metrics: buffered, kept locally at each checkpoint, synced to the root.

    Args:
        job_dir: the job's folder under the root.
        storage: the root's storage edge.
        local_dir: the job's local staging folder (this runtime's disk).
        on_synced: receives the bytes each sync appended to the root's file (it must not
            raise: :class:`colabrun.runner.train.report_sinks.Sinks` guards its sinks).
    """

    def __init__(self, job_dir: Path, storage: Storage, local_dir: Path, *,
                 on_synced: Callable[[bytes], None] | None = None) -> None:
        self.path = job_dir / METRICS_NAME
        self.storage = storage
        self.local = local_dir / METRICS_NAME
        self._synced_marker = local_dir / f"{METRICS_NAME}.synced"
        self._pending: list[str] = []
        self._lock = threading.Lock()  # the loop appends, the uploader syncs
        self._on_synced = on_synced

    def append(self, record: Mapping[str, Any]) -> None:
        """Buffer one record."""
        line = _ENCODE(record) + "\n"
        with self._lock:
            self._pending.append(line)

    def keep_locally(self) -> None:
        """Write the buffered records to the local file (at each local checkpoint).

        Three system calls, no file object: this runs beside training after every
        save, where a buffered text file costs more GIL time
        (benchmarks/README.md#measurements-behind-the-constants).
        """
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(self.local, flags, 0o644)
        except FileNotFoundError:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.local, flags, 0o644)
        try:  # the page cache keeps it past a worker's death, as local staging
            data = memoryview("".join(lines).encode())
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Append to the root's file what the local file holds beyond the last sync.

        Raises:
            StorageError: the root failed (the next sync sends the same lines again).
        """
        self.keep_locally()
        if not self.local.exists():
            return
        done = int(self._synced_marker.read_text() or 0) if self._synced_marker.exists() else 0
        with open(self.local, "rb") as f:
            f.seek(done)
            data = f.read()
        if not data:
            return
        self.storage.append_bytes(self.path, data)
        self._synced_marker.write_text(str(done + len(data)))
        if self._on_synced is not None:  # TensorBoard, the plot: never fails the sync
            self._on_synced(data)

    def close(self) -> None:
        """The session ended: the sinks fed by :meth:`sync` finish."""
        close = getattr(self._on_synced, "close", None)
        if close is not None:
            close()


BOOKKEEPING = frozenset({"step", "epoch", "session", "time"})


def read_metrics(path: Path, *, warn: Callable[[str], None] | None = None
                 ) -> list[dict[str, Any]]:
    """The records of a metrics log in step order, redone steps counted once.

    A line that does not parse (a record torn by a crash mid-append, on a storage that
    does not truncate it back) is skipped, and said: ``warn`` receives one line, else a
    :class:`TornRecords` warning is issued.
    """
    if not path.exists():
        return []
    latest: dict[tuple[int, frozenset[str]], dict[str, Any]] = {}
    torn: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn.append(number)
            continue
        latest[(int(record.get("step", 0)), frozenset(record) - BOOKKEEPING)] = record
    if torn:
        said = (f"{path}: skipped {len(torn)} torn line(s) (line {', '.join(map(str, torn))}): "
                "a record cut short when a run died mid-write; the records around it are whole")
        if warn is not None:
            warn(said)
        else:
            warnings.warn(said, TornRecords, stacklevel=2)
    return [latest[key] for key in sorted(latest, key=lambda k: (k[0], sorted(k[1])))]


class TornRecords(UserWarning):
    """A metrics log held lines that do not parse; they were skipped."""
