"""The soak's plan (benchmarks/soak_plan.py), without a runtime: every death it draws is one
``COLABRUN_KILL_AT`` accepts, in the tier it means; phases are classified from the kill log;
the tally's figures. And the knob's ``@TIER`` and ``COLABRUN_KILL_HOW=stop``, which the soak
relies on: a process stopped at its point, not killed, with its line in the kill log first."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.soak_plan import PHASES, UNREACHED, Death, phase_of, phase_rounds, plan_death, tally
from colabrun.runner.faults import FaultSpecError, KillAt, hook_from_environment
from tests.helpers import REPO


@pytest.mark.parametrize("phase", PHASES)
def test_every_drawn_death_is_one_the_knob_accepts(phase: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("COLABRUN_KILL_HOW", "stop")
    monkeypatch.setenv("COLABRUN_KILL_LOG", str(tmp_path / "kills.jsonl"))
    for seed in range(40):
        death = plan_death(phase, random.Random(seed), root_checkpoints=seed % 4)
        assert death.phase == phase
        if death.point is None:
            assert phase == "time" and 0 <= death.after_s <= 2.5
            continue
        monkeypatch.setenv("COLABRUN_KILL_AT", str(death.knob))
        hook = hook_from_environment()
        assert isinstance(hook, KillAt)
        assert (hook.point, hook.tier, hook.nth, hook.how) == (
            death.point, death.tier, death.nth, "stop")
        assert death.knob in death.describe()


def test_a_root_rotation_is_asked_for_only_once_the_root_rotates() -> None:
    tiers = {plan_death("rotation", random.Random(seed), root_checkpoints=n).tier
             for seed in range(40) for n in (0, 1)}
    assert tiers == {"local"}
    tiers = {plan_death("rotation", random.Random(seed), root_checkpoints=2).tier
             for seed in range(40)}
    assert tiers == {"local", "root"}


def test_each_round_of_phases_has_every_phase_once() -> None:
    rounds = phase_rounds(random.Random(3))
    drawn = [next(rounds) for _ in range(3 * len(PHASES))]
    for start in range(0, len(drawn), len(PHASES)):
        assert sorted(drawn[start:start + len(PHASES)]) == sorted(PHASES)
    with pytest.raises(ValueError, match="known: mid-step"):
        plan_death("nap", random.Random(0), root_checkpoints=0)


@pytest.mark.parametrize(("point", "thread", "phase"), [
    (None, None, "time"),
    ("step", "MainThread", "mid-step"),
    ("epoch.end", "MainThread", "mid-step"),
    ("save.payload_written", "colabrun-writer", "save"),
    ("save.committed", "colabrun-writer", "save"),
    ("save.payload_writing", "colabrun-io-write", "upload"),
    ("save.renamed", "colabrun-uploader", "upload"),
    ("state.tmp_written", "MainThread", "state write"),
    ("state.replaced", "colabrun-uploader", "state write"),
    ("rotate.manifest_removed", "colabrun-uploader", "rotation"),
])
def test_the_phase_comes_from_the_kill_logs_point_and_thread(
        point: str | None, thread: str | None, phase: str) -> None:
    assert phase_of(point, thread) == phase


def test_the_tally_counts_phases_and_the_work_lost() -> None:
    counts = tally(["save", "upload", "save", UNREACHED], [10, 0, 5, 25])
    assert counts.deaths == 4
    assert counts.per_phase == {"save": 2, "upload": 1, UNREACHED: 1}
    assert counts.lost_mean == 10.0 and counts.lost_max == 25
    assert tally([], []).lost_mean == 0.0


def test_a_tier_counts_only_its_own_passes() -> None:
    trigger = KillAt("save.renamed", nth=2, tier="root")
    due: list[bool] = []

    def pass_in(name: str) -> None:
        thread = threading.Thread(target=lambda: due.append(trigger.due("save.renamed")),
                                  name=name)
        thread.start()
        thread.join()

    for _ in range(3):
        pass_in("colabrun-writer")  # the local save's passes: not counted
    pass_in("colabrun-uploader")
    pass_in("colabrun-io-write")
    assert due == [False] * 4 + [True]
    assert Death("upload", "save.renamed", "root", 2).knob == "save.renamed@root:2"


@pytest.mark.parametrize(("env", "match"), [
    ({"COLABRUN_KILL_AT": "step@cloud:2"}, "unknown tier 'cloud'"),
    ({"COLABRUN_KILL_AT": "step@root:x"}, "POINT@TIER:N"),
    ({"COLABRUN_KILL_AT": "step", "COLABRUN_KILL_HOW": "pause"}, "neither 'kill' nor 'stop'"),
    ({"COLABRUN_KILL_AT": "step", "COLABRUN_KILL_HOW": "stop"}, "needs COLABRUN_KILL_LOG"),
])
def test_bad_kill_requests_are_refused_saying_what_to_write(
        env: dict[str, str], match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLABRUN_KILL_LOG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FaultSpecError, match=match):
        hook_from_environment()


def test_stop_without_an_entry_asks_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLABRUN_KILL_AT", raising=False)
    monkeypatch.delenv("COLABRUN_KILL_LOG", raising=False)
    monkeypatch.setenv("COLABRUN_KILL_HOW", "stop")
    assert hook_from_environment() is None


STOPPER = """
import sys
from pathlib import Path
from colabrun.runner.faults import KillAt
hook = KillAt("step", nth=2, log=Path(sys.argv[1]), how="stop")
hook("step")
hook("step")
print("continued", flush=True)
"""


@pytest.mark.slow
def test_stop_notes_the_point_then_stops_the_process_until_continued(tmp_path: Path) -> None:
    log = tmp_path / "kills.jsonl"
    child = subprocess.Popen([sys.executable, "-c", STOPPER, str(log)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _state(child.pid) != "T":
            assert child.poll() is None and time.monotonic() < deadline, "never stopped"
            time.sleep(0.01)
        entry = json.loads(log.read_text())
        assert entry["point"] == "step" and entry["pid"] == child.pid
        assert entry["thread"] == "MainThread" and entry["time"] <= time.time()
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=60)
        assert out.strip() == "continued" and child.returncode == 0
    finally:
        child.kill()
        child.wait()


def _state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]
