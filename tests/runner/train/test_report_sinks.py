"""Metrics where people look (runner/train/report_sinks.py): TensorBoard event files per
session, and the plot under the root redrawn as records reach it; neither fails an upload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.runner.train.report_sinks import (
    TENSORBOARD_DIR,
    TENSORBOARD_GAP_S,
    PlotSink,
    Sinks,
    TensorBoardSink,
    records_of,
    scalars_of,
)
from tests.helpers import digits_spec


def _bytes(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_whole_records_and_their_metrics() -> None:
    data = _bytes({"step": 1, "epoch": 0, "session": 0, "time": 5.0, "loss": 2, "ok": True},
                  {"step": 2, "session": 0, "note": "x"}) + b'{"step": 3, "lo'
    records = records_of(data)
    assert [r["step"] for r in records] == [1, 2]  # the torn one skipped
    assert scalars_of(records[0]) == {"loss": 2.0} and scalars_of(records[1]) == {}


class FakeWriter:
    made: list[FakeWriter] = []

    def __init__(self, *, log_dir: str) -> None:
        self.log_dir, self.scalars, self.flushes = log_dir, [], 0
        FakeWriter.made.append(self)

    def add_scalar(self, name: str, value: float, *, global_step: int,
                   walltime: float | None) -> None:
        self.scalars.append((name, value, global_step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass


def test_each_session_is_its_own_tensorboard_run(tmp_path: Path) -> None:
    FakeWriter.made = []
    sink = TensorBoardSink(tmp_path, FakeWriter)
    sink([{"step": 1, "session": 0, "loss": 2.0}, {"step": 2, "session": 0, "loss": 1.5}])
    sink([{"step": 2, "session": 1, "loss": 1.4}])  # redone after a resume
    first, second = FakeWriter.made
    assert first.log_dir == str(tmp_path / TENSORBOARD_DIR / "session-1")
    assert first.scalars == [("loss", 2.0, 1), ("loss", 1.5, 2)] and first.flushes == 1
    assert second.log_dir.endswith("session-2") and second.scalars == [("loss", 1.4, 2)]


def test_the_plot_is_drawn_an_interval_after_the_start_at_most_every_interval_and_at_the_end(
) -> None:
    drawn: list[float] = []
    now = [0.0]
    sink = PlotSink(lambda: drawn.append(now[0]), every_s=120, clock=lambda: now[0])
    metric = [{"step": 1, "session": 0, "loss": 1.0}]
    sink([{"step": 1, "session": 0}])  # no metric yet: nothing to draw
    sink(metric)  # the session's first seconds: not yet
    now[0] = 60.0
    sink(metric)  # too soon
    now[0] = 130.0
    sink(metric)
    now[0] = 140.0
    sink(metric)  # too soon after the last drawing
    sink.close()  # the end: what came since the last drawing is drawn
    sink.close()  # nothing new
    assert drawn == [130.0, 140.0]


def test_a_sink_that_fails_is_said_once_and_dropped() -> None:
    said: list[str] = []
    calls: list[list[dict[str, Any]]] = []

    def broken(records: list[dict[str, Any]]) -> None:
        raise OSError("disk full")

    sinks = Sinks([("reports/metrics.png", broken), ("kept", calls.append)], said.append)
    sinks(_bytes({"step": 1, "loss": 1.0}))
    sinks(_bytes({"step": 2, "loss": 0.5}))
    sinks.close()
    assert calls == [[{"step": 1, "loss": 1.0}], [{"step": 2, "loss": 0.5}]]  # parsed once
    assert said == ["stopped writing reports/metrics.png (OSError: disk full); training and "
                    "checkpoints are not affected"]


@pytest.mark.slow
def test_a_run_leaves_tensorboard_events_and_a_plot_under_the_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLABRUN_REPORTS", "1")  # the suite turns them off
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "runs"
    assert runner.run(digits_spec(root, epochs=2)).global_step == 90
    [run_dir] = (root / "digits" / TENSORBOARD_DIR).iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    losses = events.Scalars("loss")
    assert losses[0].step == 1 and losses[-1].step == 90, "the first and the newest"
    assert len(losses) >= 3, "0.3 s of training or more: a point each 0.1 s"
    times = [e.wall_time for e in losses[:-1]]  # the newest: held back, written at the end
    assert all(b - a >= TENSORBOARD_GAP_S - 1e-3 for a, b in zip(times, times[1:], strict=False))
    assert [e.step for e in events.Scalars("test_accuracy")] == [45, 90]
    assert (root / "digits" / "reports" / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_the_reports_knob_turns_both_sinks_off(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from colabrun.runner.train.report_sinks import default_sinks

    monkeypatch.setenv("COLABRUN_REPORTS", "0")
    assert default_sinks(tmp_path, tmp_path, "j", print)._sinks == []
    monkeypatch.setenv("COLABRUN_REPORTS", "1")
    names = [name for name, _ in default_sinks(tmp_path, tmp_path, "j", print)._sinks]
    assert names == ["TensorBoard event files", "reports/metrics.png"]  # both installed here


def test_the_sinks_never_hold_up_the_upload_that_feeds_them() -> None:
    """A first plot imports matplotlib (a second or more): the upload that synced the metrics
    must not wait for it, or a runtime's death loses more."""
    import threading
    import time

    release = threading.Event()
    seen: list[str] = []

    def slow(records: list[dict[str, Any]]) -> None:
        release.wait(10)
        seen.append(threading.current_thread().name)

    sinks = Sinks([("slow", slow)], print)
    started = time.monotonic()
    sinks(_bytes({"step": 1, "loss": 1.0}))
    assert time.monotonic() - started < 1.0 and seen == []  # handed over, not run here
    release.set()
    sinks.close()
    assert seen == ["colabrun-reports"]


def test_a_fast_series_gets_a_point_per_gap_and_its_newest_at_the_end(tmp_path: Path) -> None:
    """Steps of 2 ms: a loss point each 0.1 s, not each step (each cost the training's
    steps ~50 us of the GIL: on the digits job, saves 5x dearer, issue 19); a metric logged
    rarely keeps every point; records without a time keep theirs; the newest point held
    back is written at the end."""
    FakeWriter.made = []
    sink = TensorBoardSink(tmp_path, FakeWriter, min_gap_s=0.1)
    records = [{"step": k, "session": 0, "time": 100.0 + 0.002 * k, "loss": float(k)}
               for k in range(1, 301)]  # 0.6 s of training
    records[149]["val_loss"] = 7.0
    sink(records[:200])
    sink(records[200:])
    sink([{"step": 301, "session": 0, "loss": 0.5}, {"step": 302, "session": 0, "loss": 0.4}])
    (writer,) = FakeWriter.made
    losses = [step for name, _, step in writer.scalars if name == "loss"]
    assert losses == [1, 51, 101, 151, 201, 251, 301, 302], "a point each 50 steps"
    assert ("val_loss", 7.0, 150) in writer.scalars
    sink([{"step": 303, "session": 0, "time": 100.61, "loss": 0.3},
          {"step": 304, "session": 0, "time": 100.62, "loss": 0.2}])
    assert writer.scalars[-1] == ("loss", 0.3, 303)
    sink.close()
    assert writer.scalars[-1] == ("loss", 0.2, 304), "the newest, written at the end"


def test_odd_times_and_a_clock_set_back_lose_no_point(tmp_path: Path) -> None:
    FakeWriter.made = []
    sink = TensorBoardSink(tmp_path, FakeWriter, min_gap_s=0.1)
    sink([{"step": k, "session": 0, "time": t, "loss": float(k)}
          for k, t in enumerate([True, float("nan"), float("inf"), "x", None], start=1)])
    sink([{"step": 6, "session": 0, "time": 50.0, "loss": 6.0},
          {"step": 7, "session": 0, "time": 40.0, "loss": 7.0},  # the clock set back
          {"step": 8, "session": 0, "time": 40.05, "loss": 8.0}])
    sink([{"step": 9, "session": 1, "time": 40.06, "loss": 9.0}])  # another session's series
    sink.close()
    first, second = FakeWriter.made
    assert [step for _, _, step in first.scalars] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert second.scalars == [("loss", 9.0, 9)]
