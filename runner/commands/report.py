"""What `colabrun status` and `colabrun list` show: pure formatting of states."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

from colabrun.jobs.errors import ColabrunError
from colabrun.state.model import JobState, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

#: the status table stays within this width (a notebook cell, a phone)
TABLE_WIDTH = 100


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


def human_seconds(seconds: float) -> str:
    """``12.3 s``, ``1.23 s``, ``17.0 ms``, ``85 µs``: three figures, whatever the scale."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def human_bytes(size: int) -> str:
    """``812 B``, ``3.1 MB``, ``1.2 GB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def clock_time(seconds: float) -> str:
    """A Unix time as local ``YYYY-mm-dd HH:MM``."""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


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


def time_left(state: JobState, *, now: float) -> str:
    """Time left on the runtime of a live job's session, ``-`` otherwise."""
    live = state.status is Status.RUNNING and state.lease is not None and (
        now - state.lease.heartbeat_at <= state.lease.duration_s)
    if not live or not state.sessions:
        return "-"
    deadline = state.sessions[-1].deadline_at
    return "no limit" if deadline is None else human_age(deadline - now)


def status_table(jobs: Sequence[tuple[str, JobState | str]], *, now: float) -> str:
    """One row per job: status, epochs, step, newest checkpoint's age, sessions, time left."""
    header = ("JOB", "STATUS", "EPOCH", "STEP", "LAST CHECKPOINT", "AGE", "SESS", "LEFT")
    rows = [header]
    for name, state in jobs:
        if isinstance(state, str):
            rows.append((name[:24], "unreadable", "-", "-", "-", "-", "-", "-"))
            continue
        latest = state.latest_checkpoint
        rows.append((
            name[:24], state.status.value,
            f"{state.progress.epochs_done}/{state.progress.epochs_total}",
            str(state.progress.global_step),
            latest.name if latest else "none",
            human_age(now - latest.created_at) if latest else "-",
            str(len(state.sessions)), time_left(state, now=now),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def status_detail(state: JobState, *, job_dir: Path, now: float, description: str = "",
                  check: Callable[[str], str] | None = None) -> str:
    """Everything about one job: progress, lease, sessions, checkpoints, timings.

    Args:
        check: says of a checkpoint name whether it verifies (``"ok"``, ``"MISSING"``...).
    """
    lines = [
        f"job        {state.name}  ({job_dir})",
        f"status     {state.status.value}" + (f"  ({state.reason})" if state.reason else ""),
        f"progress   epoch {state.progress.epochs_done}/{state.progress.epochs_total}, "
        f"step {state.progress.global_step}",
        f"durable    {_durable_line(state, now)}",
        *([f"about      {description}"] if description else []),
        f"lease      {_lease_line(state, now)}",
        "sessions:",
    ]
    for s in state.sessions:
        end = (f"to {clock_time(s.ended_at)} ({human_age(s.ended_at - s.started_at)}): "
               f"{s.end_reason}" if s.ended_at else "running")
        resumed = f", resumed from {s.resumed_from}" if s.resumed_from else ", fresh start"
        lines.append(f"  #{s.index + 1} {clock_time(s.started_at)} {end}; runtime "
                     f"{s.runtime_id}, {s.device}, step {s.start_step}{resumed}")
    lines.append("checkpoints (newest last):")
    for c in state.checkpoints:
        verdict = f"  {check(c.name)}" if check else ""
        lines.append(f"  {c.name}  epoch {c.epoch} batch {c.batch}  "
                     f"{human_bytes(c.size_bytes)}  {human_age(now - c.created_at)} ago{verdict}")
    if not state.checkpoints:
        lines.append("  none yet")
    t = state.timings
    timings = ", ".join(f"{k[:-2]} {human_seconds(v)}" for k, v in t.model_dump().items()
                        if v is not None)
    lines.append(f"timings    {timings or 'none learned yet'}")
    return "\n".join(lines)


def _durable_line(state: JobState, now: float) -> str:
    """The newest checkpoint under the root: what a fresh runtime resumes from."""
    latest = state.latest_checkpoint
    if latest is None:
        return "nothing under the root yet (a new runtime would start afresh)"
    return (f"step-{latest.step} ({latest.name}), saved {human_age(now - latest.created_at)} "
            "ago: a new runtime resumes from it")


def _lease_line(state: JobState, now: float) -> str:
    lease = state.lease
    if lease is None:
        return "free"
    age = now - lease.heartbeat_at
    alive = "live" if age <= lease.duration_s else "expired"
    return (f"{alive}: pid {lease.pid} on {lease.host} (runtime {lease.owner}), generation "
            f"{lease.generation}, heartbeat {human_age(age)} ago")
