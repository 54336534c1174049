"""The status views: the table fits 100 columns; the detail tells the whole story."""

from __future__ import annotations

from pathlib import Path

from colabrun.runner.commands.report import (
    TABLE_WIDTH,
    human_seconds,
    status_detail,
    status_table,
    time_left,
)
from colabrun.state.lease import Owner, take
from colabrun.state.model import CheckpointRecord, JobState
from colabrun.state.transitions import (
    begin_session,
    end_session,
    learn_timing,
    new_job,
    record_checkpoint,
)

NOW = 1_700_100_000.0


def job(name: str, *, steps: int = 123_456, running: bool = True) -> JobState:
    state = new_job(name=name, fingerprint="f", defining={}, epochs_total=250, now=NOW - 9000)
    state = take(state, Owner("vm-1234abcd", "colab-vm", 4242), now=NOW - 30, duration_s=600)
    state = begin_session(state, runtime_id="vm-1234abcd", host="colab-vm", pid=4242,
                          device="cuda", resumed_from=None, now=NOW - 8000,
                          deadline_at=NOW + 3 * 3600)
    record = CheckpointRecord(name=f"step-{steps:09d}-g0001", step=steps, epoch=199,
                              batch=12, generation=1, size_bytes=812_000_000,
                              sha256="0" * 64, created_at=NOW - 125)
    state = record_checkpoint(state, record, now=NOW - 125)
    return state if running else end_session(state, state.status.__class__("stopped"),
                                             reason="deadline", now=NOW - 60)


def test_the_table_fits_100_columns() -> None:
    jobs = [("a" * 40, job("a" * 40)), ("cifar10-long-name-run-7", job("c", steps=10**8)),
            ("broken", "state.json is corrupt")]
    table = status_table(jobs, now=NOW)
    assert all(len(line) <= TABLE_WIDTH for line in table.splitlines()), table
    assert "3h00m" in table and "2m" in table and "unreadable" in table


def test_time_left_only_for_a_live_job() -> None:
    assert time_left(job("x"), now=NOW) == "3h00m"
    assert time_left(job("x", running=False), now=NOW) == "-"
    stale = job("x")
    assert time_left(stale, now=NOW + 3600) == "-", "an expired lease is no live job"


def test_the_detail_names_lease_sessions_and_checkpoint_checks() -> None:
    text = status_detail(job("x"), job_dir=Path("/d/x"), now=NOW, description="a test job",
                         check=lambda name: "verified")
    assert "lease      live: pid 4242 on colab-vm" in text
    assert "#1 " in text and "cuda" in text and "fresh start" in text
    assert "step-000123456-g0001  epoch 199 batch 12  812.0 MB  2m ago  verified" in text
    assert "about      a test job" in text


def test_durations_keep_three_figures_at_every_scale() -> None:
    assert [human_seconds(s) for s in (42.0, 1.234, 0.017, 0.000085, 0.0)] == [
        "42.0 s", "1.23 s", "17.0 ms", "85 µs", "0 µs"]


def test_learned_timings_of_a_fast_step_are_not_zero() -> None:
    state = learn_timing(job("fast"), now=NOW, step_s=0.00042, save_s=0.046)
    detail = status_detail(state, job_dir=Path("/r/fast"), now=NOW)
    assert "timings    step 420 µs, save 46.0 ms" in detail
