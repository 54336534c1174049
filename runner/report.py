"""What `colabrun status` and `colabrun list` show: pure formatting of states."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobs.errors import ColabrunError
from state.model import JobState
from state.statefile import StateFile
from state.storage import Storage


def human_age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h12m``, ``2d4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def human_bytes(size: int) -> str:
    """``812 B``, ``3.1 MB``, ``1.2 GB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def read_states(root: Path, storage: Storage) -> list[tuple[str, JobState | str]]:
    """Every job under ``root``: its state, or the error that prevents reading it."""
    jobs: list[tuple[str, JobState | str]] = []
    for name in sorted(storage.listdir(root)):
        if not (root / name).is_dir() or name.startswith("."):
            continue
        statefile = StateFile(root / name, storage)
        try:
            state = statefile.read()
        except ColabrunError as exc:
            jobs.append((name, str(exc)))
            continue
        if state is not None:
            jobs.append((name, state))
    return jobs


def status_table(jobs: Sequence[tuple[str, JobState | str]], *, now: float) -> str:
    """One row per job: status, epochs, step, newest checkpoint's age, sessions."""
    header = ("JOB", "STATUS", "EPOCHS", "STEP", "CHECKPOINT", "AGE", "SESSIONS")
    rows = [header]
    for name, state in jobs:
        if isinstance(state, str):
            rows.append((name, "unreadable", "-", "-", "-", "-", "-"))
            continue
        latest = state.latest_checkpoint
        rows.append((
            name[:24], state.status.value,
            f"{state.progress.epochs_done}/{state.progress.epochs_total}",
            str(state.progress.global_step),
            latest.name if latest else "none",
            human_age(now - latest.created_at) if latest else "-",
            str(len(state.sessions)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def status_detail(state: JobState, *, job_dir: Path, now: float, description: str = "") -> str:
    """Everything about one job: progress, sessions, checkpoints, timings."""
    lines = [
        f"job        {state.name}  ({job_dir})",
        f"status     {state.status.value}" + (f"  ({state.reason})" if state.reason else ""),
        f"progress   epoch {state.progress.epochs_done}/{state.progress.epochs_total}, "
        f"step {state.progress.global_step}",
        f"generation {state.generation}",
        *([f"about      {description}"] if description else []),
        "sessions:",
    ]
    for s in state.sessions:
        end = (f"ended after {human_age((s.ended_at or now) - s.started_at)}: {s.end_reason}"
               if s.ended_at else "open")
        lines.append(f"  #{s.index + 1} runtime {s.runtime_id} on {s.host} ({s.device}), "
                     f"from step {s.start_step}, {end}")
    lines.append("checkpoints (newest last):")
    for c in state.checkpoints:
        lines.append(f"  {c.name}  epoch {c.epoch} batch {c.batch}  "
                     f"{human_bytes(c.size_bytes)}  {human_age(now - c.created_at)} ago")
    if not state.checkpoints:
        lines.append("  none yet")
    t = state.timings
    timings = ", ".join(f"{k[:-2]} {v:.3f}s" for k, v in t.model_dump().items() if v is not None)
    lines.append(f"timings    {timings or 'none learned yet'}")
    return "\n".join(lines)
