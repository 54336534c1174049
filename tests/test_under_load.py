"""``python -m tests.under_load``: pytest's exit code comes back, and no busy loop outlives it."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests import under_load


@pytest.mark.slow
@pytest.mark.parametrize(("pytest_args", "code"), [(["--version"], 0), (["--no-such-flag"], 4)])
def test_pytest_exit_code_comes_back_and_the_loops_stop(
    pytest_args: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[subprocess.Popen[Any]] = []

    def start(args: list[str]) -> subprocess.Popen[Any]:
        started.append(subprocess.Popen(args))
        return started[-1]

    assert under_load.main(["--loops", "2", "--", *pytest_args], start=start) == code
    assert "2 busy loops beside pytest" in capsys.readouterr().out
    assert len(started) == 2 and all(p.poll() is not None for p in started)
