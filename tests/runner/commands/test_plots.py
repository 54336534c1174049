"""``colabrun plot``: segments per session, boundaries, resume markers, the PNG.

The job is written directly (state built with the real transitions, metrics
with the real log): three sessions, the first lost after a checkpoint at step
10 with steps 11-12 logged but never saved, so the second redoes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from colabrun.runner.commands.cli import main
from colabrun.runner.commands.plots import (
    PNG_SIGNATURE,
    NothingToPlot,
    plot_data,
    plot_job,
    render_png,
    show_plot,
)
from colabrun.runner.train.metrics import METRICS_NAME, MetricsLog, read_metrics
from colabrun.state.model import CheckpointRecord, JobState, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import (
    begin_session,
    end_session,
    new_job,
    note_session,
    record_checkpoint,
)

NAME = "three"
T0 = 1_800_000_000.0
MATPLOTLIB_MODULES = ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
                      "matplotlib.lines")


def _checkpoint(step: int, generation: int) -> CheckpointRecord:
    return CheckpointRecord(name=f"step-{step:09d}-g{generation:04d}", step=step, epoch=step // 10,
                            batch=0, generation=generation, size_bytes=1000, sha256="0" * 64,
                            created_at=T0 + step)


def _session(state: JobState, *, device: str, now: float) -> JobState:
    latest = state.latest_checkpoint
    state = begin_session(state, runtime_id=f"vm-{now:.0f}", host="vm", pid=1, device="?",
                          resumed_from=None, now=now)
    return note_session(state, device=device, resumed_from=latest.name if latest else None,
                        now=now)


def three_session_state() -> JobState:
    """Session 1 (cpu) to step 10 then lost; 2 (cuda) to 20, stopped; 3 (cuda) to 30, done."""
    state = new_job(name=NAME, fingerprint="f" * 16, defining={}, epochs_total=3, now=T0)
    state = _session(state, device="cpu", now=T0)
    state = record_checkpoint(state, _checkpoint(10, 1), now=T0 + 10)
    state = _session(state, device="cuda", now=T0 + 100)  # closes session 1 as lost
    state = record_checkpoint(state, _checkpoint(20, 2), now=T0 + 120)
    state = end_session(state, Status.STOPPED, reason="deadline", now=T0 + 121)
    state = _session(state, device="cuda", now=T0 + 200)
    state = record_checkpoint(state, _checkpoint(30, 3), now=T0 + 230)
    return end_session(state, Status.COMPLETED, reason="completed", now=T0 + 231)


def write_job(root: Path) -> Path:
    """The three-session job on disk: state.json and metrics.jsonl."""
    job_dir = root / NAME
    job_dir.mkdir(parents=True)
    StateFile(job_dir, Storage()).write(three_session_state())
    log = MetricsLog(job_dir, Storage(), job_dir.parent / "local")
    for session, steps in ((0, range(1, 13)), (1, range(11, 21)), (2, range(21, 31))):
        for step in steps:
            log.append({"step": step, "epoch": (step - 1) // 10, "session": session,
                        "time": T0 + step, "loss": 10.0 - step / 10})
        if session < 2:
            log.append({"step": 10 * (session + 1), "epoch": session + 1, "session": session,
                        "time": T0, "val_acc": 0.5 + session / 10})
        log.sync()
    log.append({"step": 30, "epoch": 3, "session": 2, "time": T0, "val_acc": 0.7})
    log.sync()
    return job_dir


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    return root, write_job(root)


def _data(job_dir: Path) -> tuple[JobState, list[dict[str, object]]]:
    state = StateFile(job_dir, Storage()).read()
    assert state is not None
    return state, read_metrics(job_dir / METRICS_NAME)


# -- the pure core --------------------------------------------------------------------------


def test_three_sessions_give_three_segments_and_two_resume_markers(
        job: tuple[Path, Path]) -> None:
    data = plot_data(*_data(job[1]))
    assert [p.metric for p in data.panels] == ["loss", "val_acc"]
    loss = data.panels[0]
    assert [s.session for s in loss.segments] == [0, 1, 2]
    # The steps session 1 logged after its last checkpoint were redone by session 2.
    assert loss.segments[0].steps == tuple(range(1, 11))
    assert loss.segments[1].steps == tuple(range(11, 21))
    assert [(m.session, m.step, m.checkpoint) for m in data.resumes] == [
        (1, 10, "step-000000010-g0001"), (2, 20, "step-000000020-g0002")]
    assert data.boundaries == (10, 20)
    assert [s.label for s in data.sessions] == [
        "session 1 (cpu)", "session 2 (cuda)", "session 3 (cuda)"]
    assert len({s.color for s in data.sessions}) == 3
    assert data.title == "three: completed, step 30, 3 sessions"


def test_resume_markers_sit_on_the_curve_at_the_checkpoint(job: tuple[Path, Path]) -> None:
    data = plot_data(*_data(job[1]))
    assert data.panels[0].resume_points == ((10, 9.0), (20, 8.0))
    assert data.panels[1].resume_points == ((10, 0.5), (20, 0.6))


def test_metrics_are_chosen_and_checked(job: tuple[Path, Path]) -> None:
    state, records = _data(job[1])
    assert [p.metric for p in plot_data(state, records, metrics=["val_acc"]).panels] == [
        "val_acc"]
    with pytest.raises(NothingToPlot, match=r"never logged 'acc'; its metrics are: loss, val_acc"):
        plot_data(state, records, metrics=["acc"])
    with pytest.raises(NothingToPlot, match="no metrics logged yet"):
        plot_data(state, [])


def test_sessions_the_state_lost_are_still_drawn(job: tuple[Path, Path]) -> None:
    state, records = _data(job[1])
    rebuilt = state.model_copy(update={"sessions": ()})  # `colabrun repair` keeps no sessions
    data = plot_data(rebuilt, records)
    assert [s.label for s in data.sessions] == ["session 1", "session 2", "session 3"]
    assert len(data.panels[0].segments) == 3 and data.resumes == ()


# -- drawing and the command --------------------------------------------------------------


def test_plot_command_writes_a_png_of_three_sessions(job: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root, job_dir = job
    had_pyplot = "matplotlib.pyplot" in sys.modules
    assert main(["plot", NAME, "--root", str(root)]) == 0
    png = job_dir / "reports" / "metrics.png"
    assert capsys.readouterr().out.strip() == f"wrote {png}"
    content = png.read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 10_000
    assert [p.name for p in png.parent.iterdir()] == ["metrics.png"]  # no temporary left
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules  # never pyplot's global state
    data = plot_data(*_data(job_dir))
    assert len(data.panels[0].segments) == 3 and len(data.resumes) == 2


def test_out_and_metric_options(job: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = job
    out = tmp_path / "elsewhere" / "loss.png"
    assert main(["plot", NAME, "--root", str(root), "--out", str(out), "--metric", "loss"]) == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    one = out.stat().st_size
    both = plot_job(NAME, root=root, out=tmp_path / "both.png", metrics=["loss", "val_acc"])
    assert both.stat().st_size > one  # a second panel drawn


def test_a_corrupt_state_still_plots_the_intact_metrics(
        job: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, job_dir = job
    (job_dir / "state.json").write_bytes(b'{"schema_version": 1, "name": "thr')  # torn
    out = tmp_path / "metrics.png"
    assert main(["plot", NAME, "--root", str(root), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert "state.json is corrupt" in capsys.readouterr().err
    data = plot_data(NAME, read_metrics(job_dir / METRICS_NAME))
    assert data.title == "three: metrics.jsonl alone (state.json unreadable)"
    assert [s.index for s in data.sessions] == [0, 1, 2]  # from the records themselves
    assert data.resumes == ()


def test_unknown_job_and_unknown_metric_exit_2(job: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = job
    assert main(["plot", "nope", "--root", str(root)]) == 2
    assert main(["plot", NAME, "--root", str(root), "--metric", "acc"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("colabrun: error: no job 'nope' under")
    assert err[1].startswith("colabrun: error: job 'three' never logged 'acc'")


def test_missing_matplotlib_is_one_clear_line(job: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root, job_dir = job
    for module in MATPLOTLIB_MODULES:  # None in sys.modules: "import ... halted"
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["plot", NAME, "--root", str(root)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install matplotlib" in err[0]
    assert not (job_dir / "reports").exists()


def test_render_handles_single_points_and_many_steps() -> None:
    state = three_session_state()
    records = [{"step": s, "session": 0, "loss": 1.0 / s} for s in range(1, 5001)]
    records.append({"step": 5000, "session": 0, "val": 0.9})  # one point alone
    assert render_png(plot_data(state, records)).startswith(PNG_SIGNATURE)


def test_show_plot_returns_an_inline_image(job: tuple[Path, Path]) -> None:
    pytest.importorskip("IPython")
    image = show_plot(NAME, root=job[0])
    assert type(image).__name__ == "Image"
    assert image.data.startswith(PNG_SIGNATURE)
