"""The metrics log: redone steps after a crash are counted once; torn lines skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colabrun.runner.train.metrics import MetricsLog, TornRecords, read_metrics
from colabrun.state.storage import Storage


def test_redone_steps_replace_the_lost_sessions_records(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, Storage(), tmp_path / "local")
    for step in (1, 2, 3):
        log.append({"step": step, "session": 0, "loss": float(step)})
    log.append({"step": 3, "session": 0, "val": 0.5})
    log.keep_locally()  # a local checkpoint
    log.sync()  # an upload
    log.sync()  # nothing new: nothing sent twice
    for step in (3,):  # session 1 resumed from step 2 and redid step 3
        log.append({"step": step, "session": 1, "loss": 30.0})
    log.sync()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss"')  # torn by a kill
    said: list[str] = []
    records = read_metrics(tmp_path / "metrics.jsonl", warn=said.append)
    assert said == [f"{tmp_path / 'metrics.jsonl'}: skipped 1 torn line(s) (line 6): a record "
                    "cut short when a run died mid-write; the records around it are whole"]
    with pytest.warns(TornRecords, match="skipped 1 torn line"):
        assert read_metrics(tmp_path / "metrics.jsonl") == records
    assert [(r["step"], r["session"], r.get("loss", r.get("val"))) for r in records] == [
        (1, 0, 1.0), (2, 0, 2.0), (3, 1, 30.0), (3, 0, 0.5)]
    assert all(json.dumps(r) for r in records)
    assert (tmp_path / "metrics.jsonl").read_text().count('"loss": 1.0') == 1
