"""``colabrun logs``: the cursor over the log (pure), and following a real file
appended from a thread, woken by watchdog's native and polling observers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from colabrun.jobs.errors import StorageError
from colabrun.runner.commands.cli import main
from colabrun.runner.commands.logs import (
    Cursor,
    LogWatcher,
    follow,
    log_path,
    print_log,
    read_new,
    restart_if_shrunk,
    take_lines,
)
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import new_job

LINES = [f"2026-01-01 00:00:{i:02d} colabrun: line {i}" for i in range(20)]
#: the longest a follower may wait without an event: far past the test's
#: timeout, so only watchdog's events can deliver the lines in time
NO_RECHECK_S = 60.0


# -- the pure cursor -----------------------------------------------------------------------


def test_a_torn_line_waits_for_its_end() -> None:
    lines, cursor = take_lines(Cursor(), b"one\ntw")
    assert lines == ["one"] and cursor == Cursor(6, b"tw")
    lines, cursor = take_lines(cursor, b"o\nthree\n")
    assert lines == ["two", "three"] and cursor == Cursor(14, b"")


def test_bad_bytes_are_replaced_not_raised() -> None:
    lines, _ = take_lines(Cursor(), b"caf\xc3\n\xff\n")
    assert lines == ["caf\ufffd", "\ufffd"]


def test_a_shrunk_file_is_read_from_the_top() -> None:
    assert restart_if_shrunk(Cursor(50, b"x"), 10) == Cursor()
    assert restart_if_shrunk(Cursor(50, b"x"), 50) == Cursor(50, b"x")


# -- the edges on real files -----------------------------------------------------------------


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "job"
    path.mkdir(parents=True)
    (path / "spec.json").write_text("{}")  # what makes `colabrun logs` find the job
    return path


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def test_read_new_reads_only_what_was_appended_and_restarts_on_truncation(
        job_dir: Path) -> None:
    path = log_path(job_dir)
    storage = Storage()
    assert read_new(path, Cursor(), storage) == ([], Cursor())  # no log yet
    path.parent.mkdir()
    _append(path, "a\nb\nc")
    lines, cursor = read_new(path, Cursor(), storage)
    assert lines == ["a", "b"] and cursor == Cursor(5, b"c")
    _append(path, "\n")
    assert read_new(path, cursor, storage)[0] == ["c"]
    path.write_text("new\n")  # replaced by a shorter file
    assert read_new(path, cursor, storage)[0] == ["new"]


def test_print_log_includes_a_torn_last_line(job_dir: Path) -> None:
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text("one\ntwo")
    seen: list[str] = []
    assert print_log(path, write=seen.append) == 2
    assert seen == ["one", "two"]


@pytest.fixture
def writer() -> Iterator[Callable[[Path, bool], None]]:
    """Starts a thread that appends :data:`LINES` to a log, a few ms apart."""
    threads: list[threading.Thread] = []

    def start(path: Path, make_folder: bool) -> None:
        def body() -> None:
            if make_folder:
                path.parent.mkdir()
            for line in LINES:
                _append(path, line + "\n")
                time.sleep(0.005)

        thread = threading.Thread(target=body, name="test-log-writer")
        threads.append(thread)
        thread.start()

    yield start
    for thread in threads:
        thread.join(timeout=5.0)


def _follow_until_last(path: Path, watcher: LogWatcher) -> tuple[str, list[str]]:
    seen: list[str] = []
    end = follow(path, write=seen.append, watcher=watcher, stop=lambda: LINES[-1] in seen,
                 timeout_s=10.0, recheck_s=NO_RECHECK_S)
    return end, seen


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
def test_follow_prints_lines_as_a_thread_appends_them(
        job_dir: Path, writer: Callable[[Path, bool], None], polling: bool) -> None:
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text("before\n")
    watcher = LogWatcher(path, polling=polling, interval_s=0.05)
    writer(path, False)
    end, seen = _follow_until_last(path, watcher)
    assert end == "stopped"
    assert seen == ["before", *LINES]


def test_follow_waits_for_the_log_folder_to_appear(
        job_dir: Path, writer: Callable[[Path, bool], None]) -> None:
    path = log_path(job_dir)
    watcher = LogWatcher(path, polling=False)
    writer(path, True)  # the job's first run creates log/ after `logs -f` started
    end, seen = _follow_until_last(path, watcher)
    assert end == "stopped" and seen == LINES


class _FolderAppearsDuringStart(LogWatcher):
    """The job's first run creates log/ just as the watch on the job's folder is set up."""

    def _start_on(self, folder: Path) -> None:
        super()._start_on(folder)
        self.path.parent.mkdir(exist_ok=True)


def test_a_log_folder_created_during_start_is_watched(job_dir: Path) -> None:
    path = log_path(job_dir)
    watcher = _FolderAppearsDuringStart(path, polling=False)
    watcher.start()
    try:
        assert watcher.watched == path.parent  # its creation event was missed: looked again
    finally:
        watcher.stop()


def test_a_folder_that_cannot_be_watched_is_a_storage_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone" / "job"  # as a lost mount looks: the folder is not there
    with pytest.raises(StorageError, match="cannot watch .* for new log lines"):
        follow(log_path(gone), write=print, timeout_s=1.0)


def test_ctrl_c_ends_follow_cleanly(job_dir: Path) -> None:
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text("one\ntwo\n")

    def interrupted(line: str) -> None:
        raise KeyboardInterrupt

    assert follow(path, write=interrupted, timeout_s=5.0) == "interrupted"
    # the autouse fixture fails the test if the observer thread was left running


def test_timeout_ends_follow_with_the_torn_line_shown(job_dir: Path) -> None:
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text("one\ntw")
    seen: list[str] = []
    assert follow(path, write=seen.append, timeout_s=0.05, recheck_s=0.01) == "timeout"
    assert seen == ["one", "tw"]


# -- the command -------------------------------------------------------------------------------


def test_logs_command(job_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(job_dir.parent)
    assert main(["logs", "job", "--root", root]) == 0
    assert "has no log lines yet" in capsys.readouterr().err
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text("\n".join(LINES[:3]) + "\n")
    assert main(["logs", "job", "--root", root]) == 0
    assert capsys.readouterr().out.splitlines() == LINES[:3]
    assert main(["logs", "job", "--root", root, "--follow", "--timeout", "0.05"]) == 0
    assert capsys.readouterr().out.splitlines() == LINES[:3]
    assert main(["logs", "nope", "--root", root]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


def _set_status(job_dir: Path, status: Status) -> None:
    state = new_job(name="job", fingerprint="f", defining={}, epochs_total=1, now=1.0)
    StateFile(job_dir, Storage()).write(state.model_copy(update={"status": status}))


def test_follow_ends_when_the_job_does(job_dir: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    root = str(job_dir.parent)
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text(LINES[0] + "\n")
    _set_status(job_dir, Status.RUNNING)

    def the_job() -> None:
        time.sleep(0.3)
        with open(path, "a") as f:
            f.write(LINES[1] + "\n")
        _set_status(job_dir, Status.COMPLETED)
        with open(path, "a") as f:  # its last line, written after its state
            f.write(LINES[2] + "\n")

    thread = threading.Thread(target=the_job)
    thread.start()
    started = time.monotonic()
    assert main(["logs", "job", "--root", root, "--follow", "--timeout", "60"]) == 0
    thread.join()
    assert time.monotonic() - started < 30  # ended with the job, not at the timeout
    assert capsys.readouterr().out.splitlines() == LINES[:3]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.STOPPED, Status.FAILED])
def test_follow_of_a_job_that_had_ended_prints_and_returns(
        job_dir: Path, status: Status, capsys: pytest.CaptureFixture[str]) -> None:
    path = log_path(job_dir)
    path.parent.mkdir()
    path.write_text(LINES[0] + "\n")
    _set_status(job_dir, status)
    assert main(["logs", "job", "--root", str(job_dir.parent), "--follow",
                 "--timeout", "60"]) == 0
    assert capsys.readouterr().out.splitlines() == LINES[:1]


def test_follow_of_a_pending_job_waits_for_it(job_dir: Path) -> None:
    _set_status(job_dir, Status.PENDING)
    started = time.monotonic()
    assert main(["logs", "job", "--root", str(job_dir.parent), "--follow",
                 "--timeout", "0.5"]) == 0
    assert time.monotonic() - started >= 0.5  # waited: a pending job may start any moment
