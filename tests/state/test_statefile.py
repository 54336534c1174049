"""``state.json`` on a real ``tmp_path``: atomic writes, corrupt files, the lock."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from filelock import FileLock
from filelock import Timeout as LockTimeout

from colabrun.jobs.errors import StateCorrupt, StorageError
from colabrun.state.model import JobState, Status
from colabrun.state.statefile import STATE_NAME, STATE_WRITE_POINTS, StateFile, parse_state
from colabrun.state.storage import Storage
from colabrun.state.transitions import begin_session, learn_timing, new_job
from tests.state.test_storage import FailingFs, storage_with


class Killed(Exception):
    """Stands for the process dying at a named point."""


def a_state(now: float = 1000.0) -> JobState:
    state = new_job(name="digits", fingerprint="f" * 64, defining={"seed": 7, "params": {}},
                    epochs_total=3, now=now)
    return begin_session(state, runtime_id="rt-1", host="vm", pid=42, device="cpu",
                         resumed_from=None, now=now)


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "root" / "digits"
    folder.mkdir(parents=True)
    return folder


def stray_temporaries(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.iterdir() if p.name.endswith(".tmp"))


# -- roundtrip ---------------------------------------------------------------------


def test_missing_state_reads_as_none(job_dir: Path) -> None:
    state_file = StateFile(job_dir, storage_with())

    assert not state_file.exists()
    assert state_file.read() is None


def test_write_then_read_roundtrips(job_dir: Path) -> None:
    state = learn_timing(a_state(), now=1001.0, step_s=0.25)
    state_file = StateFile(job_dir, storage_with())

    state_file.write(state)

    assert state_file.exists()
    assert state_file.read() == state
    assert StateFile(job_dir, Storage()).read() == state  # a fresh reader too
    assert json.loads((job_dir / STATE_NAME).read_bytes())["status"] == "running"
    assert stray_temporaries(job_dir) == []


def test_write_passes_its_points_in_order(job_dir: Path) -> None:
    points: list[str] = []

    StateFile(job_dir, storage_with(), on_point=points.append).write(a_state())

    assert points == list(STATE_WRITE_POINTS) == ["state.tmp_written", "state.replaced"]


# -- atomicity ---------------------------------------------------------------------


def test_failed_replace_leaves_old_state_byte_identical(job_dir: Path) -> None:
    old = a_state()
    StateFile(job_dir, storage_with()).write(old)
    before = (job_dir / STATE_NAME).read_bytes()
    fs = FailingFs("replace", err=errno.EACCES)
    new = learn_timing(old, now=2000.0, step_s=9.0)

    with pytest.raises(StorageError):
        StateFile(job_dir, storage_with(fs)).write(new)

    assert (job_dir / STATE_NAME).read_bytes() == before
    assert StateFile(job_dir, storage_with()).read() == old
    # the temporary holds the new state, but nothing reads it ...
    leftovers = stray_temporaries(job_dir)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{STATE_NAME}.")
    assert parse_state((job_dir / leftovers[0]).read_bytes(), where=job_dir / STATE_NAME) == new
    # ... and the next start clears it away
    StateFile(job_dir, storage_with()).discard_stale_temporaries()
    assert stray_temporaries(job_dir) == []
    assert StateFile(job_dir, storage_with()).read() == old


def test_transient_replace_failure_is_retried(job_dir: Path) -> None:
    StateFile(job_dir, storage_with()).write(a_state())
    new = learn_timing(a_state(), now=2000.0, step_s=9.0)

    StateFile(job_dir, storage_with(FailingFs("replace", err=errno.ENOTCONN))).write(new)

    assert StateFile(job_dir, storage_with()).read() == new


@pytest.mark.parametrize("seam", ["write", "fsync"])
def test_failed_temporary_write_leaves_old_state(job_dir: Path, seam: str) -> None:
    old = a_state()
    StateFile(job_dir, storage_with()).write(old)
    before = (job_dir / STATE_NAME).read_bytes()

    with pytest.raises(StorageError):
        StateFile(job_dir, storage_with(FailingFs(seam, err=errno.ENOSPC))).write(
            learn_timing(old, now=2000.0, save_s=1.0)
        )

    assert (job_dir / STATE_NAME).read_bytes() == before


def test_killed_after_temporary_written_leaves_old_state(job_dir: Path) -> None:
    old = a_state()
    StateFile(job_dir, storage_with()).write(old)

    def die(point: str) -> None:
        if point == "state.tmp_written":
            raise Killed(point)

    with pytest.raises(Killed):
        StateFile(job_dir, storage_with(), on_point=die).write(
            learn_timing(old, now=2000.0, step_s=1.0)
        )

    assert StateFile(job_dir, storage_with()).read() == old


# -- corrupt files -----------------------------------------------------------------


def _corruptions() -> dict[str, bytes]:
    good = (a_state().model_dump_json(indent=2) + "\n").encode()
    raw = json.loads(good)
    wrong_version = {**raw, "schema_version": 99}
    bad_field = {**raw, "status": "exploded"}
    negative = {**raw, "generation": -1}
    missing = {k: v for k, v in raw.items() if k != "spec_fingerprint"}
    return {
        "garbage": b"\x00\xff\xfe not json at all \x80",
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "wrong_schema_version": json.dumps(wrong_version).encode(),
        "no_schema_version": json.dumps({k: v for k, v in raw.items()
                                         if k != "schema_version"}).encode(),
        "not_an_object": b"[1, 2, 3]",
        "invalid_status": json.dumps(bad_field).encode(),
        "negative_generation": json.dumps(negative).encode(),
        "missing_field": json.dumps(missing).encode(),
    }


@pytest.mark.parametrize("kind", list(_corruptions()))
def test_corrupt_state_raises_naming_path_and_repair(job_dir: Path, kind: str) -> None:
    data = _corruptions()[kind]
    path = job_dir / STATE_NAME
    path.write_bytes(data)

    with pytest.raises(StateCorrupt) as info:
        StateFile(job_dir, storage_with()).read()

    message = str(info.value)
    assert str(path) in message
    assert "colabrun repair digits" in message
    assert str(job_dir.parent) in message  # the --root to pass
    assert path.read_bytes() == data  # never silently replaced


def test_wrong_schema_version_says_which(job_dir: Path) -> None:
    (job_dir / STATE_NAME).write_bytes(_corruptions()["wrong_schema_version"])

    with pytest.raises(StateCorrupt, match="schema_version 99"):
        StateFile(job_dir, storage_with()).read()


def test_invalid_field_is_named(job_dir: Path) -> None:
    (job_dir / STATE_NAME).write_bytes(_corruptions()["invalid_status"])

    with pytest.raises(StateCorrupt, match=r"\(status: "):
        StateFile(job_dir, storage_with()).read()


def test_update_of_corrupt_state_raises_and_writes_nothing(job_dir: Path) -> None:
    data = _corruptions()["truncated"]
    (job_dir / STATE_NAME).write_bytes(data)

    with pytest.raises(StateCorrupt):
        StateFile(job_dir, storage_with()).update(lambda s: s)

    assert (job_dir / STATE_NAME).read_bytes() == data
    assert stray_temporaries(job_dir) == []


def test_quarantine_keeps_the_bytes_aside(job_dir: Path) -> None:
    data = _corruptions()["garbage"]
    (job_dir / STATE_NAME).write_bytes(data)
    state_file = StateFile(job_dir, storage_with())

    aside = state_file.quarantine()

    assert aside is not None
    assert aside.parent == job_dir
    assert aside.name.startswith(f"{STATE_NAME}.corrupt-")
    assert aside.read_bytes() == data
    assert not state_file.exists()
    assert state_file.read() is None


def test_quarantine_without_state_is_none(job_dir: Path) -> None:
    assert StateFile(job_dir, storage_with()).quarantine() is None


def test_discard_stale_temporaries_removes_only_them(job_dir: Path) -> None:
    state_file = StateFile(job_dir, storage_with())
    state_file.write(a_state())
    kept = {STATE_NAME, f"{STATE_NAME}.corrupt-1-abcdef", "other.tmp", "notes.json"}
    for name in kept - {STATE_NAME}:
        (job_dir / name).write_bytes(b"keep")
    for name in (f".{STATE_NAME}.1a2b3c4d.tmp", f".{STATE_NAME}.deadbeef.tmp"):
        (job_dir / name).write_bytes(b"half a state")

    state_file.discard_stale_temporaries()

    names = {p.name for p in job_dir.iterdir()} - {f"{STATE_NAME}.lock"}
    assert names == kept
    assert state_file.read() == a_state()


# -- the lock ----------------------------------------------------------------------


def test_update_applies_the_change_under_the_lock(job_dir: Path) -> None:
    state_file = StateFile(job_dir, storage_with())
    state_file.write(a_state())
    other = FileLock(str(job_dir / f"{STATE_NAME}.lock"), timeout=0)
    seen: list[bool] = []

    def change(state: JobState) -> JobState:
        try:
            other.acquire()
        except LockTimeout:
            seen.append(True)
        else:
            other.release()
            seen.append(False)
        return learn_timing(state, now=3000.0, step_s=2.0)

    new = state_file.update(change)

    assert seen == [True]  # another locker was shut out while the change ran
    assert new.timings.step_s == 2.0
    assert state_file.read() == new
    other.acquire()  # and the lock is free again afterwards
    other.release()


def test_update_waits_for_another_writer_then_gives_up(job_dir: Path) -> None:
    state_file = StateFile(job_dir, storage_with(), lock_timeout_s=0.05)
    state_file.write(a_state())
    other = FileLock(str(job_dir / f"{STATE_NAME}.lock"))

    with other, pytest.raises(StorageError, match="held by another process"):
        state_file.update(lambda s: s.model_copy(update={"status": Status.FAILED}))

    assert state_file.read() == a_state()


def test_update_of_missing_state_raises(job_dir: Path) -> None:
    with pytest.raises(StorageError, match="vanished"):
        StateFile(job_dir, storage_with()).update(lambda s: s)


def test_update_whose_change_raises_writes_nothing_and_releases(job_dir: Path) -> None:
    state_file = StateFile(job_dir, storage_with(), lock_timeout_s=0.05)
    state_file.write(a_state())
    before = (job_dir / STATE_NAME).read_bytes()

    def boom(state: JobState) -> JobState:
        raise Killed("change")

    with pytest.raises(Killed):
        state_file.update(boom)

    assert (job_dir / STATE_NAME).read_bytes() == before
    state_file.update(lambda s: learn_timing(s, now=5.0, load_s=1.0))  # lock was released
