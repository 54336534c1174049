"""The soak, in CI: ten runtimes die whole (mid-step, in a save, an upload, a state write, a
rotation, at a time), each job resumed on a new runtime, ending bitwise equal to a run never
interrupted. The 100-death soak is the benchmark case: ``python -m benchmarks --only soak
--deaths 100`` (docs/fault_injection.md#the-soak). Skipped, with the reason, where
``unshare`` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.soak import soak
from benchmarks.soak_plan import PHASES
from colabrun.runner.sim import refusal
from tests.helpers import assert_exactly_equal, final_payload

pytestmark = [pytest.mark.skipif(refusal() is not None, reason=str(refusal())),
              pytest.mark.slow]

DEATHS = 10
SEED = 18


def test_ten_runtime_deaths_each_resumed_from_the_root_end_bitwise_equal(
        tmp_path: Path) -> None:
    report = soak(DEATHS, tmp_path, seed=SEED)
    assert report.problems == [], "\n\n".join(report.problems)
    deaths = report.deaths
    assert len(deaths) == DEATHS
    assert {life.death.phase for life in deaths if life.death} == set(PHASES)
    for life in report.lives:  # from the root's newest, never a local copy (that /tmp died)
        said = life.resumed or ("fresh start" if "fresh start" in life.log else None)
        assert said in (life.expected or "fresh start", None), life.log
        assert "local copy" not in life.log
        assert said is not None or life.ended == "killed", life.log
    assert any(life.expected for life in report.lives[1:]), "no death left a checkpoint"
    assert report.divergences == 0
    assert any(life.checked for life in deaths), "no death compared with the reference"
    reference = final_payload(tmp_path / "reference" / "root" / "d")
    for job in report.jobs:
        assert job.status == "completed"
        assert_exactly_equal(final_payload(job.job_dir), reference)
        lines = (job.job_dir / "metrics.jsonl").read_text().splitlines()
        assert lines and all(json.loads(line) for line in lines)
    counts = report.tally()
    assert counts.deaths == DEATHS and sum(counts.per_phase.values()) == DEATHS
    assert counts.per_phase.get("upload"), "no death in an upload: @root never fired"
    assert 0 <= counts.lost_mean <= counts.lost_max
