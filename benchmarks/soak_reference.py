"""The soak's uninterrupted run (:mod:`benchmarks.soak`), and comparisons with it.

The job runs once, never killed, in a fresh interpreter as each runtime's worker is: a library
the job imports while it sets up may draw from Python's ``random`` when first imported
(``sklearn.datasets`` does), so a process that had imported it already would train with
other random numbers. A hook copies every checkpoint it commits
(locally: its uploads are paced, so the root holds only some), so that the checkpoint each
death leaves as the root's newest can be compared with the uninterrupted run's at the same
step, and a divergence pinned to the death that caused it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.soak_runtime import NAME, PARAMS, REPO, SPEC
from colabrun.jobs.spec import JobSpec
from colabrun.runner.api import run as run_job
from colabrun.runner.display.console import Console
from colabrun.state.checkpoints import CHECKPOINTS_DIR, CheckpointStore, parse_checkpoint_name
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage


class _KeepSaves:
    """A hook: at each local commit, copy the checkpoints staged in ``local`` to ``keep``."""

    def __init__(self, local: Path, keep: Path) -> None:
        self.local = local
        self.keep = keep

    def __call__(self, point: str) -> None:
        if point != "save.committed":
            return
        for folder in self.local.glob(f"*/{CHECKPOINTS_DIR}/step-*"):
            if parse_checkpoint_name(folder.name) and not (self.keep / folder.name).exists():
                shutil.copytree(folder, self.keep / folder.name)


class Reference:
    """The job's uninterrupted run, in ``folder``: its final payload and every save's.

    Raises:
        RuntimeError: the run did not complete.
    """

    def __init__(self, folder: Path, epochs: int) -> None:
        self.saves = CheckpointStore(folder / "saves", Storage())
        done = subprocess.run(
            [sys.executable, "-c", RUN_IN_A_FRESH_INTERPRETER, str(folder), str(epochs)],
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
            text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed: {done.stdout}{done.stderr}")
        self.final = final_payload(folder / "root" / NAME)
        self._by_step = {key[0]: name for name in self.saves.list_names()
                         if (key := parse_checkpoint_name(name))}

    def at_step(self, step: int) -> Any:
        """The payload it saved at ``step``, or ``None`` when it saved none there."""
        name = self._by_step.get(step)
        return self.saves.load_payload(name) if name else None


RUN_IN_A_FRESH_INTERPRETER = (
    "import sys; from pathlib import Path; from benchmarks.soak_reference import run_uninterrupted;"
    " run_uninterrupted(Path(sys.argv[1]), int(sys.argv[2]))")


def run_uninterrupted(folder: Path, epochs: int) -> None:
    """Train the job in this process, never killed, keeping a copy of every checkpoint.

    Raises:
        RuntimeError: the run did not complete.
    """
    spec = JobSpec.model_validate({**SPEC, "epochs": epochs, "supervise": False,
                                   "local_dir": str(folder / "local"), "params": PARAMS})
    saves = CheckpointStore(folder / "saves", Storage()).dir  # what Reference lists
    saves.mkdir(parents=True, exist_ok=True)
    result = run_job(spec, root=folder / "root", progress=False,
                     console=Console(out=io.StringIO()),
                     on_point=_KeepSaves(folder / "local", saves))
    if result.status != "completed":
        raise RuntimeError(f"the uninterrupted run ended {result.status}: {result.reason}")


def final_payload(job_dir: Path) -> Any:
    """The whole payload (tracked objects and random states) of the job's newest recorded
    checkpoint, verified first; ``None`` when there is none."""
    state = StateFile(job_dir, Storage()).read()
    if state is None or state.latest_checkpoint is None:
        return None
    store = CheckpointStore(job_dir, Storage())
    store.verify(state.latest_checkpoint.name)
    return store.load_payload(state.latest_checkpoint.name)
