"""A benchmark's training process: ``python -c "from benchmarks.child import main; main()"
SPEC_JSON ROOT`` trains the job in this process (its first step, or a SIGKILL, ends it)."""

from __future__ import annotations

import io
import sys

from jobs.spec import JobSpec
from runner.api import run
from runner.console import Console


def main() -> None:
    spec = JobSpec.model_validate_json(sys.argv[1])
    run(spec, root=sys.argv[2], progress=False, console=Console(out=io.StringIO()))
