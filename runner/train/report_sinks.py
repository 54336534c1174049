"""Metrics where people look, written as they reach the root (docs/concepts.md#metrics):

- TensorBoard event files under ``<job>/tensorboard/session-N/``, when the ``tensorboard``
  package is importable (Colab ships it): ``%tensorboard --logdir <root>`` shows every
  session, each as its own run, so steps redone after a crash show as a second curve;
- ``<job>/reports/metrics.png`` redrawn at most every :data:`PLOT_EVERY_S`, when matplotlib
  is importable, so the curves open from Drive on a phone.

Each sink gets the records just appended to the root's ``metrics.jsonl`` (parsed once for
all of them), on a thread of its own: never on the upload's path (a first plot imports
matplotlib, a second or more: an upload waiting for it would leave more work to lose with
the runtime), never on the training thread. Both are conveniences: a failure is said once and
the sink turns off.
"""

from __future__ import annotations

import importlib.util
import json
import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from colabrun.runner import knobs
from colabrun.runner.train.metrics import BOOKKEEPING

#: a sink: receives the records of each sync
Sink = Callable[[list[dict[str, Any]]], None]
#: the plot is redrawn at most this often (seconds); it costs a few hundred ms of CPU
PLOT_EVERY_S = 120.0
#: how long the session's end waits for the last records to be written (seconds)
CLOSE_WAIT_S = 30.0
TENSORBOARD_DIR = "tensorboard"
#: a series (one metric of one session) gets a TensorBoard point at most this often, by the
#: records' times (seconds); the newest one held back is written at the session's end. Each
#: point cost the sinks' thread ~50 us of Python, taken from training's steps while it held
#: the GIL and charged to the save whose upload brought the records: on the digits job
#: (~3 ms steps, a point each) the adaptive cadence's saves cost 13-20 ms instead of 3-4,
#: came every 230-280 steps instead of 90-110, and spent 2.1-2.3% instead of 1.9 (issue 19).
#: TensorBoard shows 1000 points of a series anyway
TENSORBOARD_GAP_S = 0.1
#: times closer than this are equal (a wall time near 1.8e9 s is exact to 2.4e-7 s)
TIME_EPS_S = 1e-6


def records_of(data: bytes) -> list[dict[str, Any]]:
    """The whole records among appended bytes (a torn line is skipped). Pure."""
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """A record's metrics: its numbers that are not bookkeeping. Pure."""
    return {k: float(v) for k, v in record.items() if k not in BOOKKEEPING
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardSink:
    """Writes each record's metrics as scalars, one event folder per session, each series
    a point per :data:`TENSORBOARD_GAP_S` at most (by the records' times).

    Args:
        job_dir: the job's folder under the root.
        make_writer: ``torch.utils.tensorboard.SummaryWriter`` (tests pass their own).
        min_gap_s: the least time between two points of a series.
    """

    def __init__(self, job_dir: Path, make_writer: Callable[..., Any], *,
                 min_gap_s: float = TENSORBOARD_GAP_S) -> None:
        self.folder = job_dir / TENSORBOARD_DIR
        self._make_writer = make_writer
        self.min_gap_s = min_gap_s
        self._writers: dict[int, Any] = {}
        self._last: dict[tuple[int, str], float] = {}  # a series' last point's time
        self._held: dict[tuple[int, str], tuple[float, int, float]] = {}  # newest since

    def __call__(self, records: list[dict[str, Any]]) -> None:
        touched = set()
        for record in records:
            session = int(record.get("session", 0))
            writer = self._writer(session)
            at = record.get("time")
            if isinstance(at, bool) or not isinstance(at, (int, float)) \
                    or not math.isfinite(at):
                at = None  # no wall time: every point is written, at the time of writing
            for name, value in scalars_of(record).items():
                series = (session, name)
                if at is not None:
                    since = at - self._last.get(series, -math.inf)
                    if 0.0 <= since < self.min_gap_s - TIME_EPS_S:  # (a clock set back: not)
                        self._held[series] = (value, record["step"], at)
                        continue
                    self._last[series] = at
                self._held.pop(series, None)
                writer.add_scalar(name, value, global_step=record["step"], walltime=at)
            touched.add(session)
        for session in touched:
            self._writers[session].flush()

    def close(self) -> None:
        """Write each series' newest point, if it was held back, and close every file."""
        for (session, name), (value, step, at) in self._held.items():
            self._writer(session).add_scalar(name, value, global_step=step, walltime=at)
        self._held.clear()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, session: int) -> Any:
        if session not in self._writers:
            self._writers[session] = self._make_writer(
                log_dir=str(self.folder / f"session-{session + 1}"))
        return self._writers[session]


class PlotSink:
    """Redraws ``reports/metrics.png`` from the root, at most every ``every_s``, the first
    time ``every_s`` after the session starts (a first drawing imports matplotlib and
    costs 0.15-0.2 s of CPU: never in a session's busiest seconds, and a short session
    draws once, at its end).

    Args:
        draw: draws the job's plot (``colabrun.runner.commands.plots.plot_job`` bound to it).
        every_s: the least time between two drawings.
        clock: monotonic seconds.
    """

    def __init__(self, draw: Callable[[], object], *, every_s: float = PLOT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._draw, self.every_s, self._clock = draw, every_s, clock
        self._last = clock()
        self._behind = False  # records came that the drawing does not show yet

    def __call__(self, records: list[dict[str, Any]]) -> None:
        if not any(scalars_of(r) for r in records):
            return  # nothing to draw yet
        self._behind = True
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._behind = False
            self._draw()

    def close(self) -> None:
        """Draw what came since the last drawing (the session's end)."""
        if self._behind:
            self._behind = False
            self._draw()


def _summary_writer(**kwargs: Any) -> Any:
    """torch's ``SummaryWriter``, imported on the sinks' thread when first needed."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(**kwargs)


class Sinks:
    """The sinks in turn, on a daemon thread of their own fed by a queue; one that raises
    is said once (``warn``) and dropped."""

    def __init__(self, sinks: list[tuple[str, Sink]], warn: Callable[[str], None]) -> None:
        self._sinks = sinks
        self._warn = warn
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __call__(self, data: bytes) -> None:
        """Hand ``data`` over; returns at once."""
        if not self._sinks:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="colabrun-reports",
                                            daemon=True)
            self._thread.start()
        self._queue.put(data)

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """The session ended: what was handed over is written, then each sink finishes (the
        plot drawn up to date); waits at most ``timeout_s``."""
        if self._thread is None:
            self._finish()
            return
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._feed(records_of(data))
        self._finish()

    def _feed(self, records: list[dict[str, Any]]) -> None:
        for entry in list(self._sinks):
            self._guarded(entry, lambda sink: sink(records))

    def _finish(self) -> None:
        for entry in list(self._sinks):
            self._guarded(entry, lambda sink: getattr(sink, "close", lambda: None)())

    def _guarded(self, entry: tuple[str, Sink], call: Callable[[Sink], None]) -> None:
        name, sink = entry
        try:
            call(sink)
        except Exception as exc:  # a convenience never fails an upload
            self._sinks.remove(entry)
            self._warn(f"stopped writing {name} ({type(exc).__name__}: {exc}); "
                       "training and checkpoints are not affected")


def default_sinks(job_dir: Path, root: Path, name: str, warn: Callable[[str], None]) -> Sinks:
    """TensorBoard and the plot, each where its package is importable (none when the
    ``COLABRUN_REPORTS`` knob says 0)."""
    sinks: list[tuple[str, Sink]] = []
    if not knobs.reports():
        return Sinks(sinks, warn)
    if importlib.util.find_spec("tensorboard") is not None:
        sinks.append(("TensorBoard event files", TensorBoardSink(job_dir, _summary_writer)))
    if importlib.util.find_spec("matplotlib") is not None:
        from colabrun.runner.commands.plots import plot_job

        sinks.append(("reports/metrics.png",
                       PlotSink(lambda: plot_job(name, root=root))))
    return Sinks(sinks, warn)
