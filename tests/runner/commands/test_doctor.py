"""``colabrun doctor``: the checks over faked facts (pure), the facts of this
machine (the edge), and the command, which must say "not on Colab" here."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from colabrun.jobs.errors import StorageError
from colabrun.runner.commands.cli import main
from colabrun.runner.commands.doctor import (
    DRIVE_MOUNT_HINT,
    Disk,
    Facts,
    Gpu,
    RootProbe,
    check_drive,
    check_gpu,
    check_ram,
    check_root,
    check_time_left,
    parse_meminfo,
    render,
    run_checks,
)
from colabrun.runner.commands.doctor_facts import gather_facts, probe_root
from colabrun.runner.faults import Fail, FaultyFs
from colabrun.runner.platform import is_colab
from colabrun.state.storage import Storage

T = TypeVar("T")
GB = 10**9
HOUR = 3600.0
NOW = 1_800_000_000.0
LINE = re.compile(r"^(OK  |WARN|INFO) [^:]+: .+$|^     hint: .+$")

LAPTOP = Facts(platform="local", python="3.12.1", torch="2.11.0+cpu", now=NOW,
               ram_bytes=16 * GB, disks=(Disk("/tmp", 200 * GB, 500 * GB),))
#: a free Colab runtime with a T4, Drive mounted and nearly full, 2 h into its 12 h
COLAB_T4_DRIVE_FULL = Facts(
    platform="colab", python="3.12.11", torch="2.11.0+cu128", cuda="12.8",
    gpus=(Gpu("Tesla T4", 15_828_320_256),), ram_bytes=13_605_851_136,
    disks=(Disk("/tmp, /content", 80 * GB, 112 * GB),), drive_mounted=True,
    drive=Disk("/content/drive/MyDrive", GB // 2, 15 * GB),
    runtime_started_at=NOW - 2 * HOUR, budget_s=12 * HOUR, now=NOW)


def _lines(facts: Facts) -> list[str]:
    return render(run_checks(facts)).splitlines()


# -- the checks (pure) ----------------------------------------------------------------------


def test_colab_with_a_t4_and_a_full_drive() -> None:
    lines = _lines(COLAB_T4_DRIVE_FULL)
    assert all(LINE.match(line) for line in lines), lines
    assert "OK   platform: on Colab" in lines
    assert "OK   GPU: Tesla T4, 15.8 GB" in lines
    assert "OK   RAM: 13.6 GB (standard runtime, not high-RAM)" in lines
    assert "WARN Drive: mounted, 500.0 MB free of 15.0 GB" in lines
    hint = lines[lines.index("WARN Drive: mounted, 500.0 MB free of 15.0 GB") + 1]
    assert hint.startswith("     hint: less than 2.0 GB free on Drive")
    assert "OK   time left: at most 10h00m (up 2h00m of a 12h00m ceiling; the runtime may " \
           "end sooner)" in lines
    assert "INFO CUDA: 12.8 (torch's build)" in lines


def test_colab_without_gpu_or_drive_says_how_to_fix_both() -> None:
    facts = replace(COLAB_T4_DRIVE_FULL, gpus=(), drive_mounted=False, drive=None)
    gpu, drive = check_gpu(facts), check_drive(facts)
    assert (gpu.level, gpu.hint) == ("WARN", "no GPU: Runtime > Change runtime type > GPU")
    assert (drive.level, drive.value, drive.hint) == ("WARN", "not mounted", DRIVE_MOUNT_HINT)
    assert "drive.mount('/content/drive')" in DRIVE_MOUNT_HINT


def test_a_broken_driver_is_shown_not_raised() -> None:
    facts = replace(COLAB_T4_DRIVE_FULL, gpus=(), gpu_problem="CUDA initialization: no driver")
    assert check_gpu(facts).value == "none (CUDA initialization: no driver)"


def test_high_ram_is_recognised_on_colab_only() -> None:
    assert check_ram(replace(COLAB_T4_DRIVE_FULL, ram_bytes=27 * GB)).value == (
        "27.0 GB (high-RAM runtime)")
    assert check_ram(replace(LAPTOP, ram_bytes=27 * GB)).value == "27.0 GB"
    assert check_ram(replace(LAPTOP, ram_bytes=None)).level == "INFO"


def test_dead_drive_mount_and_low_vm_disk_warn() -> None:
    facts = replace(COLAB_T4_DRIVE_FULL, drive=None,
                    drive_problem="[Errno 107] Transport endpoint is not connected",
                    disks=(Disk("/tmp", 3 * GB, 112 * GB),))
    checks = {c.label: c for c in run_checks(facts)}
    assert checks["Drive"].level == "WARN" and "not answering" in checks["Drive"].value
    assert "drive.flush_and_unmount()" in checks["Drive"].hint
    assert checks["disk /tmp"].level == "WARN" and "ENOSPC" in checks["disk /tmp"].hint


def test_time_left_warns_in_the_last_hour_and_never_goes_negative() -> None:
    late = replace(COLAB_T4_DRIVE_FULL, runtime_started_at=NOW - 11.5 * HOUR)
    assert check_time_left(late).level == "WARN"
    assert check_time_left(late).value.startswith("at most 30m ")
    past = replace(COLAB_T4_DRIVE_FULL, runtime_started_at=NOW - 13 * HOUR)
    assert check_time_left(past).value.startswith("at most 0s ")
    assert check_time_left(LAPTOP).value == "no known limit on this platform"


def test_a_laptop_is_not_on_colab_and_nothing_is_off() -> None:
    lines = _lines(LAPTOP)
    assert lines[0] == "INFO platform: not on Colab (a local machine)"
    assert not [line for line in lines if line.startswith("WARN")]
    assert "INFO GPU: none, this torch is a CPU-only build; jobs train on the CPU" in lines


DRIVE_ROOT = RootProbe("/content/drive/MyDrive/colabrun", "/content/drive/MyDrive/colabrun",
                       exists=True, filesystem="fuse.drive", polled=True, seconds=0.42)


def test_the_root_line_says_how_fast_a_commit_went_and_what_is_special_there() -> None:
    [ok] = check_root(replace(COLAB_T4_DRIVE_FULL, root=DRIVE_ROOT))
    assert (ok.level, ok.label) == ("OK", "root /content/drive/MyDrive/colabrun")
    assert ok.value == ("fuse.drive; 1.0 MB written, synced, renamed and read back in 420 ms; "
                        "control requests are polled every second")
    fresh = replace(DRIVE_ROOT, folder="/content/drive/MyDrive", exists=False)
    [new] = check_root(replace(LAPTOP, root=fresh))
    assert new.value.endswith("not created yet: the first run creates it")
    assert check_root(LAPTOP) == []  # no root probed: no line


def test_a_slow_or_unwritable_root_warns_with_a_way_out() -> None:
    [slow] = check_root(replace(LAPTOP, root=replace(DRIVE_ROOT, seconds=12.0)))
    assert slow.level == "WARN" and "saves will be slow" in slow.hint
    broken = replace(DRIVE_ROOT, seconds=None, problem="[Errno 13] Permission denied")
    [cannot] = check_root(replace(LAPTOP, root=broken))
    assert cannot.level == "WARN"
    assert cannot.value == ("cannot write into /content/drive/MyDrive/colabrun "
                            "([Errno 13] Permission denied)")
    assert "another --root" in cannot.hint
    assert all(LINE.match(line) for line in _lines(replace(LAPTOP, root=broken)))


def test_parse_meminfo() -> None:
    assert parse_meminfo("MemTotal:       13286972 kB\nMemFree: 1 kB\n") == 13_286_972 * 1024
    assert parse_meminfo("MemFree: 1 kB\n") is None


# -- the edge --------------------------------------------------------------------------------


def test_facts_of_this_machine(tmp_path: Path) -> None:
    facts = gather_facts(now=NOW, drive_path=tmp_path / "no-drive")
    assert facts.platform in ("colab", "kaggle", "local") and facts.torch == torch.__version__
    assert bool(facts.gpus) == torch.cuda.is_available()
    assert facts.disks and all(d.total_bytes >= d.free_bytes > 0 for d in facts.disks)
    assert (facts.drive_mounted, facts.drive) == (False, None)


def test_a_mounted_drive_reports_its_free_space(tmp_path: Path) -> None:
    facts = gather_facts(now=NOW, drive_path=tmp_path)
    assert facts.drive_mounted and facts.drive is not None and facts.drive.free_bytes > 0


class _DeadMount(Storage):
    """Every call on the mount fails as a lost FUSE mount does (docs/colab.md#drive-pitfalls)."""

    def __init__(self, mount: Path) -> None:
        super().__init__(attempts=1)
        self.mount = mount

    def call(self, what: str, path: Path, fn: Callable[[], T], *,
             timeout_s: float | None = None) -> T:
        if path == self.mount:
            raise StorageError(f"{what} {path}: [Errno 107] Transport endpoint is not "
                               "connected\nsecond line")
        return super().call(what, path, fn, timeout_s=timeout_s)


def test_a_dead_drive_mount_is_a_fact_not_a_crash(tmp_path: Path) -> None:
    facts = gather_facts(now=NOW, storage=_DeadMount(tmp_path), drive_path=tmp_path)
    assert facts.drive_mounted and facts.drive is None
    assert facts.drive_problem is not None and "Errno 107" in facts.drive_problem
    assert "\n" not in facts.drive_problem


def test_the_root_probe_commits_a_file_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    probe = probe_root(Storage(attempts=1), tmp_path)
    assert (probe.exists, probe.folder, probe.problem) == (True, str(tmp_path), None)
    assert probe.seconds is not None and probe.seconds > 0 and probe.filesystem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]


def test_a_root_not_created_yet_is_probed_in_its_parent_and_not_created(tmp_path: Path) -> None:
    probe = probe_root(Storage(attempts=1), tmp_path / "runs" / "colabrun")
    assert (probe.exists, probe.folder, probe.problem) == (False, str(tmp_path), None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", [Fail("fsync", errno=5), Fail("replace", errno=13)],
                         ids=["fsync-EIO", "rename-EACCES"])
def test_a_failing_write_in_the_root_is_a_warning_and_leaves_nothing(tmp_path: Path,
                                                                     fault: Fail) -> None:
    probe = probe_root(Storage(FaultyFs(fail=[fault]), attempts=1), tmp_path)
    assert probe.seconds is None and probe.problem is not None and "\n" not in probe.problem
    assert os.strerror(fault.errno) in probe.problem, probe.problem
    assert list(tmp_path.iterdir()) == []
    [check] = check_root(replace(LAPTOP, root=probe))
    assert check.level == "WARN"


def test_a_write_that_comes_back_short_is_caught(tmp_path: Path) -> None:
    fs = FaultyFs(lose_uploads=lambda path: True, lose_how="half")  # DriveFS lost half of it
    probe = probe_root(Storage(fs, attempts=1), tmp_path)
    assert probe.seconds is None and probe.problem is not None
    assert list(tmp_path.iterdir()) == []


# -- the command -------------------------------------------------------------------------------


def test_doctor_runs_here_and_says_not_on_colab(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    expected = "OK   platform: on Colab" if is_colab() else "INFO platform: not on Colab"
    assert lines[0].startswith(expected)
    labels = {line[5:].split(":")[0] for line in lines if not line.startswith(" ")}
    assert {"platform", "GPU", "RAM", "Drive", "time left", "Python", "torch", "CUDA"} <= labels


def test_doctor_probes_the_root_it_is_given(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--root", str(tmp_path / "runs")]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("OK   root ")]
    assert line.startswith(f"OK   root {tmp_path / 'runs'}: ")
    assert line.endswith("not created yet: the first run creates it")
    assert list(tmp_path.iterdir()) == []


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["facts"]["torch"] == torch.__version__
    assert {c["level"] for c in report["checks"]} <= {"OK", "WARN", "INFO"}
    assert report["checks"][0]["label"] == "platform"
