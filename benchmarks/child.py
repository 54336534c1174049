"""A benchmark's training process: ``python -c "from benchmarks.child import main; main()"
SPEC_JSON ROOT`` trains the job in this process (its first step, or a SIGKILL, ends it).
``cold_load()`` (argument: a file) prints the seconds of this process's first ``torch.load``."""

from __future__ import annotations

import io
import os
import sys
import time

from benchmarks.jobs import FIRST_STEP_ENV
from colabrun.jobs.spec import JobSpec
from colabrun.runner.api import run
from colabrun.runner.display.console import Console


def _import_what_jobs_import() -> None:
    """What the benchmark jobs import, fresh or resumed alike (torch.optim pulls in
    torch._dynamo): ~2 s that vary by a few tenths from one start to the next,
    which would drown the milliseconds a resume costs."""
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401


def main() -> None:
    marker = os.environ.get(FIRST_STEP_ENV)
    _import_what_jobs_import()
    if marker:  # imports done: what follows is colabrun's and the job's own time
        with open(marker + ".entry", "w") as f:
            f.write(repr(time.time()))
    spec = JobSpec.model_validate_json(sys.argv[1])
    run(spec, root=sys.argv[2], progress=False, console=Console(out=io.StringIO()))


def cold_load() -> None:
    """The reference of a resume: a process's first ``torch.load`` of a checkpoint (the
    first pays for lazy set-up a resumed process pays too), after the same imports."""
    _import_what_jobs_import()
    import torch

    started = time.perf_counter()
    torch.load(sys.argv[1], weights_only=True)
    print(time.perf_counter() - started)
