"""The Drive fault suite (docs/colab.md#drive-pitfalls): storage faults at the root's storage edge.

Training runs in-process with a FaultyFs under the root (the local disk stays
healthy, as on a Colab VM whose Drive mount misbehaves). After every fault
the invariants hold: state.json parses, it names only checkpoints that
verify, and the final weights equal an uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.runner.faults import Fail, FaultyFs, lose_upload
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from tests.helpers import assert_exactly_equal, final_payload, tmpfs
from tests.rng_heavy_job import train as heavy_train

STEPS = 45  # 3 epochs of 15


def spec_for(root: Path, *, epochs: int = 3) -> JobSpec:
    return JobSpec(name="heavy", entrypoint=heavy_train, epochs=epochs, seed=3,
                   params={"lr": 0.01}, root=str(root), local_dir=str(root / "local"),
                   supervise=False, checkpoint={"every_steps": 4, "every_s": None,
                                                "keep_last": 2, "max_overhead": None})


def faulty(fs: FaultyFs) -> Storage:
    return Storage(fs=fs, attempts=2, backoff_s=0.001, timeout_s=30)


def at_step(actions: dict[int, Any]) -> Any:
    """A hook running ``actions[n]`` when the n-th step passes."""
    seen = {"steps": 0}

    def hook(point: str) -> None:
        if point == "step":
            seen["steps"] += 1
            action = actions.get(seen["steps"])
            if action is not None:
                action()

    return hook


def assert_invariants(job_dir: Path) -> None:
    state = StateFile(job_dir, Storage()).read()
    assert state is not None
    store = CheckpointStore(job_dir, Storage())
    for record in state.checkpoints:
        store.verify(record.name)
    if state.latest_checkpoint is not None:
        store.load_payload(state.latest_checkpoint.name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ref")
    runner.run(spec_for(root))
    return final_payload(root / "heavy")


def test_lost_mount_trains_on_locally_and_catches_up(
    tmp_path: Path, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fs = FaultyFs()
    lost_at: list[int] = []

    def lose() -> None:
        fs.mount_lost = True
        lost_at.append(len(fs.calls))

    def back() -> None:  # once an upload met the lost mount (uploads are paced)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                "checkpoints" in path for _, path in fs.calls[lost_at[0]:]):
            time.sleep(0.01)
        fs.mount_lost = False

    result = runner.run(spec_for(tmp_path), storage=faulty(fs), on_point=at_step({10: lose,
                                                                                   30: back}))
    out = capsys.readouterr().out
    assert "progress is NOT durable" in out and "Transport endpoint is not connected" in out
    assert "the storage is back" in out
    assert result.status is Status.COMPLETED and result.global_step == STEPS
    assert_invariants(tmp_path / "heavy")
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def test_a_hung_drive_write_does_not_freeze_training(tmp_path: Path,
                                                     reference: dict[str, Any]) -> None:
    fs = FaultyFs()
    release = threading.Event()
    hung_at: list[float] = []

    def hang() -> None:
        fs.hang_writes = release
        hung_at.append(time.monotonic())

    def done() -> None:
        hung_at.append(time.monotonic())
        release.set()

    result = runner.run(spec_for(tmp_path), storage=Storage(fs=fs, timeout_s=600),
                        on_point=at_step({8: hang, STEPS: done}))
    assert hung_at[1] - hung_at[0] < 10, "37 steps trained while every Drive write hung"
    assert result.status is Status.COMPLETED
    assert_invariants(tmp_path / "heavy")
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def test_an_upload_lost_on_its_way_is_caught_and_redone(tmp_path: Path,
                                                        reference: dict[str, Any],
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    lost: list[Path] = []

    def lose_first_payload(path: Path) -> bool:
        if path.name == "state.pt" and "/checkpoints/.tmp-step-" in str(path) and not lost:
            lost.append(path)
            return True
        return False

    fs = FaultyFs(lose_uploads=lose_first_payload, lose_how="half")
    result = runner.run(spec_for(tmp_path), storage=faulty(fs))
    assert lost, "the fault fired"
    assert "does not match checkpoint" in capsys.readouterr().out
    assert result.status is Status.COMPLETED
    assert_invariants(tmp_path / "heavy")
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)


def test_writes_that_never_reached_drive_are_caught_on_the_next_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longer = tmp_path / "ref4"
    runner.run(spec_for(longer, epochs=4))
    runner.run(spec_for(tmp_path))
    job_dir = tmp_path / "heavy"
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    lose_upload(job_dir / "checkpoints" / state.latest_checkpoint.name / "state.pt")
    shutil.rmtree(tmp_path / "local")  # the VM died: a fresh runtime has no local copies
    result = runner.run(spec_for(tmp_path, epochs=4))
    assert "falling back to an older checkpoint" in capsys.readouterr().out
    assert result.status is Status.COMPLETED
    assert_invariants(job_dir)
    assert_exactly_equal(final_payload(job_dir), final_payload(longer / "heavy"))


def test_a_full_drive_is_reported_and_the_last_good_checkpoint_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = FaultyFs()
    good: list[str] = []

    def fill_up() -> None:
        # Uploads run in the background: wait for one to reach the root before the
        # disk fills, so there is a last good checkpoint to keep.
        deadline = time.monotonic() + 120
        state = StateFile(tmp_path / "heavy", Storage()).read()
        while (state is None or state.latest_checkpoint is None) and time.monotonic() < deadline:
            time.sleep(0.05)
            state = StateFile(tmp_path / "heavy", Storage()).read()
        assert state is not None and state.latest_checkpoint is not None, "nothing uploaded"
        good.append(state.latest_checkpoint.name)
        fs.rules.append(Fail("write", nth=None, errno=errno.ENOSPC, path_contains=".tmp-step"))

    result = runner.run(spec_for(tmp_path), storage=faulty(fs), on_point=at_step({20: fill_up}),
                        upload_wait_s=1.0)
    out = capsys.readouterr().out
    assert "the disk is full" in out and "NOT durable" in out
    assert result.status is Status.STOPPED and "only on this runtime's disk" in (result.reason
                                                                               or "")
    job_dir = tmp_path / "heavy"
    CheckpointStore(job_dir, Storage()).verify(good[0])  # never deleted to make room
    assert_invariants(job_dir)
    assert result.exit_code == 3


def test_a_stale_listing_does_not_pick_an_older_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    with pytest.raises(Exception):  # noqa: B017 - any error: the "runtime" died
        runner.run(spec_for(tmp_path), on_point=at_step({23: crash}))
    job_dir = tmp_path / "heavy"
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    named = state.latest_checkpoint.name
    older = [n for n in CheckpointStore(job_dir, Storage()).list_names() if n != named]
    fs = FaultyFs()
    fs.freeze_listings(job_dir / "checkpoints", names=older)  # Drive has not caught up
    shutil.rmtree(tmp_path / "local")
    capsys.readouterr()
    runner.run(spec_for(tmp_path), storage=faulty(fs))
    assert f"resuming from {named} " in capsys.readouterr().out


def test_a_clean_stop_waits_for_the_final_upload(tmp_path: Path) -> None:
    """An interrupt's final save must reach the root even while uploads lag behind."""
    import os
    import signal

    fs = FaultyFs(slow_write_s=0.02)  # a slow Drive: uploads trail the training
    result = runner.run(spec_for(tmp_path), storage=faulty(fs),
                        on_point=at_step({22: lambda: os.kill(os.getpid(), signal.SIGINT)}))
    assert result.status is Status.STOPPED and result.reason == "interrupted"
    state = StateFile(tmp_path / "heavy", Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    assert state.latest_checkpoint.step == 22, "the stop's own checkpoint is under the root"
    assert_invariants(tmp_path / "heavy")


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A real 4 MB tmpfs: filled, every write there fails part-way with ENOSPC, as on a full
    Drive; skipped where mounting is refused."""
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        yield disk


def _fill(disk: Path) -> None:
    """Write until the disk is full to the byte."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 10, 64, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


class _AppendWatch(FaultyFs):
    """The real filesystem, telling when an append to the metrics log met a full disk."""

    def __init__(self) -> None:
        super().__init__()
        self.append_refused = threading.Event()

    def open(self, path: Path, mode: str) -> Any:
        file = super().open(path, mode)
        if "a" not in mode or Path(path).name != "metrics.jsonl":
            return file
        watch = self.append_refused
        write = file.write

        def watched(data: Any) -> int:
            try:
                return write(data)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    watch.set()
                raise

        file.write = watched  # type: ignore[method-assign]
        return file


def test_a_root_filled_then_freed_mid_run_keeps_every_metrics_record_whole(
    tmp_path: Path, small_disk: Path, reference: dict[str, Any],
    capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_disk / "runs"
    spec = spec_for(root).model_copy(update={"local_dir": str(tmp_path / "local")})
    fs = _AppendWatch()

    def free() -> None:
        # the disk stays full until a metrics append met it: on a loaded machine the
        # uploads of steps 8-30 may all fail on the checkpoint's write first, and the
        # retry that syncs the metrics comes after retry_s (15 s)
        assert fs.append_refused.wait(60), "no metrics append met the full disk"
        (small_disk / "filler").unlink()

    hook = at_step({8: lambda: _fill(small_disk), 30: free})
    result = runner.run(spec, on_point=hook, storage=faulty(fs))
    out = capsys.readouterr().out
    assert "cannot append" in out and "No space left on device" in out  # the disk was met
    assert result.status is Status.COMPLETED
    lines = (root / "heavy" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses: none torn
    assert {r["step"] for r in records if "loss" in r} == set(range(1, STEPS + 1))
    assert_invariants(root / "heavy")
    assert_exactly_equal(final_payload(root / "heavy"), reference)
