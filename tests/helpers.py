"""Shared test helpers: specs for tiny jobs, the CLI in a subprocess, exact comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun.jobs.spec import JobSpec
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

REPO = Path(__file__).resolve().parents[1]


def digits_spec(root: Path, *, name: str = "digits", epochs: int = 3, **overrides: Any) -> JobSpec:
    """The built-in digits job, small: 3 epochs of 45 steps, a save every 10 steps (and at
    each epoch's end; the adaptive cadence off, so saves fall at known steps).

    Unsupervised by default: a COLABRUN_KILL_AT kill then takes the whole
    runner down, as a runtime's death does (F1); supervisor tests opt in.
    """
    fields: dict[str, Any] = {
        "name": name,
        "entrypoint": "colabrun.jobs.examples.digits:train",
        "epochs": epochs,
        "seed": 7,
        "params": {"lr": 0.05, "batch_size": 32, "width": 8},
        "checkpoint": {"every_steps": 10, "every_s": None, "at_epoch_end": True, "keep_last": 2,
                       "max_overhead": None},  # saves at known steps: no adaptive ones
        "root": str(root),
        "local_dir": str(root.parent / "local"),  # delete it to play a fresh runtime
        "supervise": False,
    }
    fields.update(overrides)
    return JobSpec.model_validate(fields)


def write_spec_file(path: Path, spec: JobSpec) -> Path:
    """Write ``spec`` as JSON to ``path``."""
    import json

    path.write_text(json.dumps(spec.to_json_dict(), indent=2))
    return path


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``colabrun ARGS`` in a fresh Python process."""
    # One torch thread: tiny models gain nothing from more, and on a loaded 2-core
    # machine OpenMP spin-waiting made steps 10x slower.
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "colabrun", *args], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def final_payload(job_dir: Path) -> dict[str, Any]:
    """The tracked state of the job's newest committed checkpoint."""
    store = CheckpointStore(job_dir, Storage())
    state = StateFile(job_dir, Storage()).read()
    assert state is not None and state.latest_checkpoint is not None
    name = state.latest_checkpoint.name
    store.verify(name)
    payload = store.load_payload(name)
    return payload["tracked"]  # type: ignore[no-any-return]


def assert_exactly_equal(a: Any, b: Any, path: str = "") -> None:
    """``torch.equal`` on every tensor, ``==`` on everything else, same structure."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{path}: tensor vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: dtype/shape differ"
        assert torch.equal(a, b), f"{path}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ"
        for key in a:
            assert_exactly_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_exactly_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (to assert nothing changed)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def finished_digits_job(root: Path, **overrides: Any) -> JobSpec:
    """Run a 1-epoch digits job to completion in-process under ``root``; return its spec.

    For module-scoped fixtures, which the per-test fixtures of conftest do not
    cover: torch's deterministic mode, switched on by the run, is put back here.
    """
    from colabrun import runner
    from colabrun.state.model import Status

    spec = digits_spec(root, name="digits", epochs=1, **overrides)
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        result = runner.run(spec)
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    assert result.status is Status.COMPLETED and result.global_step == 45
    return spec


def copy_job(finished: tuple[Path, JobSpec], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of a finished job's root: (root, spec file pointing at it)."""
    import shutil

    template_root, spec = finished
    root = tmp_path / "runs"
    shutil.copytree(template_root, root)
    spec_file = write_spec_file(tmp_path / "spec.json",
                                spec.model_copy(update={"root": str(root)}))
    return root, spec_file


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted on ``folder`` (created) with mount ``options`` (``size=4m``,
    ``ro,size=1m``), unmounted afterwards: a disk that fills up or refuses writes as a real
    one does (root ignores mode bits, not a read-only mount). Skips the test, with mount's
    reason, where mounting is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
