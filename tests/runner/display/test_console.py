"""The console's job log: lines kept while training reach the log within seconds, in order,
with no flush from the training thread (a killed worker loses at most that much)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from colabrun.runner.display.console import LOG_DIR, LOG_NAME, Console, LogFlusher
from colabrun.state.storage import Storage


def _log(job: Path) -> list[str]:
    path = job / LOG_DIR / LOG_NAME
    return [line.split(" ", 2)[2] for line in path.read_text().splitlines()] \
        if path.exists() else []


def test_deferred_lines_reach_the_log_on_the_flusher_s_own_thread(tmp_path: Path) -> None:
    console = Console(out=io.StringIO(), storage=Storage())
    console.attach_log(tmp_path)
    with LogFlusher(console, interval_s=0.05):
        assert console.deferred
        console.info("epoch 1/2 done")
        assert _log(tmp_path) == []  # not written by the caller
        deadline = time.monotonic() + 10
        while not _log(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _log(tmp_path) == ["colabrun: epoch 1/2 done"]
        console.warn("epoch 2/2 late")
    assert not console.deferred
    assert _log(tmp_path) == ["colabrun: epoch 1/2 done", "colabrun: WARNING: epoch 2/2 late"]


def test_lines_the_log_could_not_take_wait_for_the_next_flush(tmp_path: Path) -> None:
    (tmp_path / LOG_DIR).write_text("a file where the log folder goes")
    console = Console(out=io.StringIO(), storage=Storage(attempts=1))
    console.attach_log(tmp_path)
    console.deferred = True
    console.info("kept")
    console.flush_log()  # fails: the line stays pending
    (tmp_path / LOG_DIR).unlink()
    console.flush_log()
    assert _log(tmp_path) == ["colabrun: kept"]
