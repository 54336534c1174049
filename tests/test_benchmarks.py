"""The benchmark suite runs (``--quick``) and reports what it promises: medians, references,
ratios and targets, as a table and as JSON. Its figures are not checked here: timings are
not tests (see benchmarks/README.md)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks.cases import Row, bootstrap_median, table


def test_a_row_gives_its_ratio_against_the_reference() -> None:
    row = Row("x", 3.0, "s", "bare", 2.0, target="ratio <= 1.02", meets=False)
    assert row.ratio == pytest.approx(1.5)
    assert Row("y", 1.0, "s").ratio is None
    text = table([row])
    assert "bare 2.000 s" in text and "1.500" in text and "NO" in text


def test_the_bootstrap_interval_brackets_the_median_and_narrows_with_agreement() -> None:
    spread = [0.9, 1.0, 1.05, 1.1, 1.3, 1.02, 0.98, 1.2, 1.01]
    low, high = bootstrap_median(spread, random.Random(0))
    assert min(spread) <= low <= 1.02 <= high <= max(spread)
    assert bootstrap_median([1.01] * 9, random.Random(0)) == (1.01, 1.01)


def test_quick_run_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = bench.main(["--quick", "--only", "step_ratio", "--only", "upload",
                       "--out", str(out), "--scratch", str(tmp_path / "scratch")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "digits step, every_25" in printed and "copy to root" in printed
    report = json.loads(out.read_text())
    names = {row["name"]: row for row in report["results"]}
    every_25 = names["digits step, every_25"]
    assert every_25["reference"] == "bare" and every_25["ratio"] > 0
    assert every_25["meets"] in (True, False) and every_25["samples"]
    assert every_25["ratio"] == pytest.approx(
        sorted(every_25["detail"]["paired_ratios"])[1])  # the median of the 3 repetitions
    assert 0 < every_25["detail"]["metered_overhead"] < 1  # its saves' share of the run time
    assert names["copy to root, just written"]["value"] > 0
    assert names["copy to root, left by an earlier process"]["detail"]["source_checked"] is True
    assert report["machine"]["torch"] and report["config"]["quick_mode"] is True
