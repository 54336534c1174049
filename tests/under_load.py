"""Run pytest with busy loops beside it: do the tests that start processes hold on a loaded
machine (a Colab VM whose data loader keeps every core busy, a CI runner shared with others)?

    python -m tests.under_load                 # the slow tier, two busy loops
    python -m tests.under_load --loops 4 -- tests/runner/watch -x

Everything after ``--`` goes to pytest (default: ``-m slow``). The loops are plain Python
processes spinning at normal priority; they are killed when pytest ends, whatever its result,
and pytest's exit code is this command's (docs/contributing.md, "Running the tests").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: one busy loop: a fresh interpreter burning one core until killed
SPIN = [sys.executable, "-c", "while True: pass"]


def run_under_load(pytest_args: Sequence[str], *, loops: int,
                   start: Callable[[list[str]], subprocess.Popen[Any]] = subprocess.Popen
                   ) -> int:
    """Start ``loops`` busy processes, run pytest with ``pytest_args``, stop the loops.

    Args:
        pytest_args: pytest's command line.
        loops: how many cores to keep busy.
        start: starts one busy loop from its command line.

    Returns:
        pytest's exit code.
    """
    spinners = [start(SPIN) for _ in range(loops)]
    try:
        return subprocess.call([sys.executable, "-m", "pytest", *pytest_args])
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=5)


def main(argv: Sequence[str] | None = None,
         start: Callable[[list[str]], subprocess.Popen[Any]] = subprocess.Popen) -> int:
    """The command line; see the module docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    ours, pytest_args = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args \
        else (args, ["-m", "slow"])
    parser = argparse.ArgumentParser(prog="python -m tests.under_load",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=2, help="busy loops to run (default: 2)")
    options = parser.parse_args(ours)
    print(f"under_load: {options.loops} busy loops beside pytest {' '.join(pytest_args)}",
          flush=True)
    return run_under_load(pytest_args, loops=options.loops, start=start)


if __name__ == "__main__":
    raise SystemExit(main())
