"""colabrun's benchmark suite: ``python -m benchmarks [--quick] [--only NAME] [--out FILE]``
(``--deaths N --seed S``: the soak's).

Prints a table and writes JSON. Every figure is a median over repetitions, and
every timing is also given as a ratio against a reference measured in the same
run (see benchmarks/README.md for what each one means and the targets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks import cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one repetition (a smoke test, not figures)")
    parser.add_argument("--only", action="append", choices=sorted(cases.CASES),
                        help="run only this case (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"),
                        help="where the JSON goes (default: benchmarks/results.json)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for the benchmark roots (default: a temporary folder)")
    parser.add_argument("--deaths", type=int, default=None,
                        help="runtimes the soak kills (default 10; 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the soak's seed: which deaths it draws (default 0)")
    args = parser.parse_args(argv)
    config = cases.Config.quick() if args.quick else cases.Config()
    config.soak_seed = args.seed
    if args.deaths is not None:
        config.soak_deaths = args.deaths
    rows: list[cases.Row] = []
    started = time.monotonic()
    with cases.scratch_dir(args.scratch) as scratch:
        for name in args.only or list(cases.CASES):
            print(f"# {name} ...", file=sys.stderr, flush=True)
            rows.extend(cases.CASES[name](config, scratch / name))
    print(cases.table(rows))
    report = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "cuda": torch.cuda.is_available(),
                    "platform": platform.platform()},
        "config": config.__dict__, "seconds": round(time.monotonic() - started, 1),
        "results": [row.as_json() for row in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    failed = [row.name for row in rows if row.meets is False]
    if failed:
        print(f"targets missed: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
