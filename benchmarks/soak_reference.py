"""The soak's uninterrupted run (:mod:`benchmarks.soak`), and comparisons with it.

The job runs once in this process, never killed; a hook copies every checkpoint it commits
(locally: its uploads are paced, so the root holds only some), so that the checkpoint each
death leaves as the root's newest can be compared with the uninterrupted run's at the same
step, and a divergence pinned to the death that caused it.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import torch

from benchmarks.soak_runtime import NAME, PARAMS, SPEC
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
        spec = JobSpec.model_validate({**SPEC, "epochs": epochs, "supervise": False,
                                       "local_dir": str(folder / "local"), "params": PARAMS})
        self.saves = CheckpointStore(folder / "saves", Storage())
        self.saves.dir.mkdir(parents=True, exist_ok=True)
        result = run_job(spec, root=folder / "root", progress=False,
                         console=Console(out=io.StringIO()),
                         on_point=_KeepSaves(folder / "local", self.saves.dir))
        if result.status != "completed":
            raise RuntimeError(f"the uninterrupted run ended {result.status}: {result.reason}")
        self.final = final_payload(folder / "root" / NAME)
        self._by_step = {key[0]: name for name in self.saves.list_names()
                         if (key := parse_checkpoint_name(name))}

    def at_step(self, step: int) -> Any:
        """The payload it saved at ``step``, or ``None`` when it saved none there."""
        name = self._by_step.get(step)
        return self.saves.load_payload(name) if name else None


def final_payload(job_dir: Path) -> Any:
    """The whole payload (tracked objects and random states) of the job's newest recorded
    checkpoint, verified first; ``None`` when there is none."""
    state = StateFile(job_dir, Storage()).read()
    if state is None or state.latest_checkpoint is None:
        return None
    store = CheckpointStore(job_dir, Storage())
    store.verify(state.latest_checkpoint.name)
    return store.load_payload(state.latest_checkpoint.name)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first path at which ``a`` and ``b`` differ (``torch.equal`` on tensors, ``==``
    on the rest), ``None`` when they are equal."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return None if same else path or "."
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path} (keys)"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path} (length)"
        pairs = enumerate(zip(a, b, strict=True))
        return next((d for i, (x, y) in pairs if (d := first_difference(x, y, f"{path}[{i}]"))),
                    None)
    return None if a == b else path or "."
