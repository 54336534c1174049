"""``colabrun plot``: a job's logged metrics against step, across every session.

The pure core, :func:`plot_data`, turns the state file and the metrics log
into a :class:`PlotData`: per metric, one segment per session (so a resumed
job shows where each runtime took over), the session boundaries, the resume
points and a legend label naming each session's device. :func:`draw` renders
it with matplotlib on a private ``Figure`` and the Agg canvas (never pyplot's
global state) and writes the PNG atomically; :func:`plot_job` and
:func:`show_plot` (notebooks) are the thin edges over a job's folder.

matplotlib is optional (``pip install matplotlib``; Colab has it)::

    ColabrunError
    ├── PlotUnavailable(ImportError)   exit 2   matplotlib is not installed
    └── NothingToPlot(ValueError)      exit 2   no metrics yet, or an unknown --metric
"""

from __future__ import annotations

import importlib
import io
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeGuard

from colabrun.jobs.errors import ColabrunError, JobNotFound, StateCorrupt
from colabrun.runner.api import resolve_root
from colabrun.runner.train.metrics import BOOKKEEPING, METRICS_NAME, read_metrics
from colabrun.state.jobdir import JobDir
from colabrun.state.model import JobState, Session
from colabrun.state.storage import Storage

REPORTS_DIR = "reports"
PLOT_NAME = "metrics.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PlotUnavailable(ColabrunError, ImportError):
    """matplotlib, needed to draw, is not installed."""

    exit_code = 2


class NothingToPlot(ColabrunError, ValueError):
    """The job has no metrics to plot, or not the ones asked for."""

    exit_code = 2


@dataclass(frozen=True)
class SessionStyle:
    """How one session is drawn and named in the legend."""

    index: int
    label: str
    color: str
    start_step: int
    resumed_from: str | None


@dataclass(frozen=True)
class Segment:
    """One session's points of one metric."""

    session: int
    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class ResumeMarker:
    """Where a session started from a checkpoint."""

    session: int
    step: int
    checkpoint: str


@dataclass(frozen=True)
class Panel:
    """One metric's subplot: its segments and where its resume markers sit."""

    metric: str
    segments: tuple[Segment, ...]
    resume_points: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class PlotData:
    """Everything drawn, decided without drawing."""

    title: str
    panels: tuple[Panel, ...]
    sessions: tuple[SessionStyle, ...]
    boundaries: tuple[int, ...]
    resumes: tuple[ResumeMarker, ...]


def plot_data(state: JobState | str, records: Sequence[Mapping[str, Any]], *,
              metrics: Sequence[str] | None = None) -> PlotData:
    """What to draw for a job: per metric, a segment per session.

    Args:
        state: the job's state (sessions, their devices and resume points), or only its
            name when ``state.json`` cannot be read: the metrics alone are drawn.
        records: the metrics log as :func:`colabrun.runner.train.metrics.read_metrics` returns it.
        metrics: the metric names to plot (default: all, in order of first appearance).

    Raises:
        NothingToPlot: there are no metrics, or one of ``metrics`` was never logged.
    """
    job = state if isinstance(state, str) else state.name
    names = _choose_metrics(job, records, metrics)
    sessions = _session_styles(() if isinstance(state, str) else state.sessions, records)
    resumes = tuple(ResumeMarker(s.index, s.start_step, s.resumed_from)
                    for s in sessions if s.resumed_from is not None)
    panels = tuple(_panel(name, records, resumes) for name in names)
    title = (f"{job}: metrics.jsonl alone (state.json unreadable)" if isinstance(state, str)
             else f"{job}: {state.status.value}, step {state.progress.global_step}, "
             f"{len(state.sessions)} session{'s' if len(state.sessions) != 1 else ''}")
    boundaries = tuple(s.start_step for s in sessions if s.index > 0)
    return PlotData(title=title, panels=panels, sessions=sessions, boundaries=boundaries,
                    resumes=resumes)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choose_metrics(job: str, records: Sequence[Mapping[str, Any]],
                    wanted: Sequence[str] | None) -> list[str]:
    logged = list(dict.fromkeys(key for record in records for key, value in record.items()
                                if key not in BOOKKEEPING and _is_number(value)))
    if not logged:
        raise NothingToPlot(f"job {job!r} has no metrics logged yet; pass them to "
                            "run.step(loss=...) or run.log(...) in the train function")
    unknown = [name for name in wanted or () if name not in logged]
    if unknown:
        raise NothingToPlot(f"job {job!r} never logged {', '.join(map(repr, unknown))}; "
                            f"its metrics are: {', '.join(logged)}")
    return list(dict.fromkeys(wanted)) if wanted else logged


def _session_styles(sessions: Sequence[Session], records: Sequence[Mapping[str, Any]]
                    ) -> tuple[SessionStyle, ...]:
    """The state's sessions, plus any the log names that the state lost (a rebuilt state)."""
    known = {s.index: s for s in sessions}
    indexes = sorted(set(known) | {int(r["session"]) for r in records if "session" in r})
    styles = []
    for index in indexes:
        session = known.get(index)
        device = session.device if session is not None and session.device != "?" else ""
        styles.append(SessionStyle(
            index=index,
            label=f"session {index + 1}" + (f" ({device})" if device else ""),
            color=f"C{index % 10}",
            start_step=session.start_step if session is not None else 0,
            resumed_from=session.resumed_from if session is not None else None,
        ))
    return tuple(styles)


def _panel(metric: str, records: Sequence[Mapping[str, Any]],
           resumes: Sequence[ResumeMarker]) -> Panel:
    points: dict[int, list[tuple[int, float]]] = {}
    for record in records:
        value = record.get(metric)
        if _is_number(value):
            points.setdefault(int(record.get("session", 0)), []).append(
                (int(record["step"]), float(value)))
    segments = tuple(Segment(session, tuple(s for s, _ in pts), tuple(v for _, v in pts))
                     for session, pts in sorted(points.items()))
    return Panel(metric, segments, _resume_points(segments, resumes))


def _resume_points(segments: Sequence[Segment], resumes: Sequence[ResumeMarker]
                   ) -> tuple[tuple[int, float], ...]:
    """A marker at each resume step, on the curve: the value the checkpoint saw
    (the last logged at or before it), else the resumed session's first point."""
    everything = sorted((step, value) for seg in segments
                        for step, value in zip(seg.steps, seg.values, strict=True))
    by_session = {seg.session: seg for seg in segments}
    found = []
    for marker in resumes:
        before = [value for step, value in everything if step <= marker.step]
        if before and not math.isnan(before[-1]):
            found.append((marker.step, before[-1]))
        elif marker.session in by_session:
            seg = by_session[marker.session]
            found.append((seg.steps[0], seg.values[0]))
    return tuple(found)


# -- drawing (matplotlib, optional) ------------------------------------------------------


def _matplotlib() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The three matplotlib modules used, or :class:`PlotUnavailable`."""
    try:
        return (importlib.import_module("matplotlib.figure"),
                importlib.import_module("matplotlib.backends.backend_agg"),
                importlib.import_module("matplotlib.lines"))
    except ImportError as exc:
        raise PlotUnavailable("plotting needs matplotlib, which is not installed: "
                              "pip install matplotlib") from exc


def render_png(data: PlotData) -> bytes:
    """The plot as PNG bytes.

    Raises:
        PlotUnavailable: matplotlib is not installed.
    """
    figure_mod, agg, lines = _matplotlib()
    # A private Figure on its own Agg canvas: nothing touches pyplot's global
    # figure list or backend, so nothing leaks into a notebook's own plots.
    fig = figure_mod.Figure(figsize=(9.0, 1.0 + 2.6 * len(data.panels)), layout="constrained")
    agg.FigureCanvasAgg(fig)
    axes = fig.subplots(len(data.panels), 1, sharex=True, squeeze=False)[:, 0]
    colors = {s.index: s.color for s in data.sessions}
    for ax, panel in zip(axes, data.panels, strict=True):
        _draw_panel(ax, panel, data.boundaries, colors)
    axes[-1].set_xlabel("step")
    fig.suptitle(data.title)
    # Outside the axes, and never loc="best": that one warns on large data.
    axes[0].legend(handles=_legend_handles(data, lines), loc="upper left",
                   bbox_to_anchor=(1.01, 1.0), fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _draw_panel(ax: Any, panel: Panel, boundaries: Sequence[int],
                colors: Mapping[int, str]) -> None:
    for step in boundaries:
        ax.axvline(step, color="0.55", linestyle="--", linewidth=0.9)
    for seg in panel.segments:
        ax.plot(seg.steps, seg.values, color=colors.get(seg.session, "C0"), linewidth=1.3,
                marker="o" if len(seg.steps) == 1 else None, markersize=3)
    if panel.resume_points:
        steps, values = zip(*panel.resume_points, strict=True)
        ax.plot(steps, values, linestyle="none", marker="o", markersize=9,
                markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.5, zorder=3)
    ax.set_ylabel(panel.metric)
    ax.grid(True, alpha=0.3)


def _legend_handles(data: PlotData, lines: ModuleType) -> list[Any]:
    handles = [lines.Line2D([], [], color=s.color, linewidth=2, label=s.label)
               for s in data.sessions]
    if data.boundaries:
        handles.append(lines.Line2D([], [], color="0.55", linestyle="--",
                                    label="session boundary"))
    if data.resumes:
        handles.append(lines.Line2D([], [], linestyle="none", marker="o", markersize=9,
                                    markerfacecolor="none", markeredgecolor="black",
                                    label="resumed from a checkpoint"))
    return handles


def draw(data: PlotData, path: Path, *, storage: Storage | None = None) -> Path:
    """Render ``data`` and write it to ``path`` as a PNG, atomically.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        StorageError: the file could not be written.
    """
    png = render_png(data)
    storage = storage or Storage()
    storage.makedirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    storage.write_bytes(tmp, png)
    storage.replace(tmp, path)
    return path


# -- the job-level edges ---------------------------------------------------------------


def plot_job(name: str, *, root: str | Path | None = None, out: str | Path | None = None,
             metrics: Sequence[str] | None = None, storage: Storage | None = None) -> Path:
    """Plot job ``name``'s metrics; return the PNG's path.

    Args:
        name: the job's name.
        root: the folder holding the jobs (default: the platform's).
        out: where to write (default: ``<job>/reports/metrics.png``).
        metrics: the metrics to plot (default: all).
        storage: the storage edge.

    Raises:
        JobNotFound: no such job. NothingToPlot, PlotUnavailable: see :func:`plot_data`
        and :func:`draw`.
    """
    resolved = resolve_root(root)
    job = JobDir(resolved, name, storage=storage)
    state: JobState | str | None
    try:
        state = job.statefile.read()
    except StateCorrupt as exc:  # the metrics are intact: draw them without the sessions
        print(f"colabrun: WARNING: {exc}; plotting metrics.jsonl without the sessions",
              file=sys.stderr)
        state = name
    if state is None:
        raise JobNotFound(f"no job {name!r} under {resolved}; `colabrun list --root "
                          f"{resolved}` shows the jobs there")
    records = read_metrics(job.path / METRICS_NAME, warn=lambda message: print(
        f"colabrun: WARNING: {message}", file=sys.stderr))
    data = plot_data(state, records, metrics=metrics)
    target = Path(out).expanduser() if out else job.path / REPORTS_DIR / PLOT_NAME
    return draw(data, target, storage=job.storage)


def show_plot(name: str, *, root: str | Path | None = None,
              metrics: Sequence[str] | None = None) -> Any:
    """Plot job ``name`` and return the image for a notebook to show inline.

    Returns:
        An ``IPython.display.Image`` when IPython is importable (a notebook
        cell's last value then shows it), else the PNG's path.
    """
    path = plot_job(name, root=root, metrics=metrics)
    try:
        display = importlib.import_module("IPython.display")
    except ImportError:
        return path
    return display.Image(filename=str(path))
