"""Tier 3 for the worker's life: it never outlives its supervisor.

``colabrun run`` (the supervisor, in the foreground) is SIGKILLed at seeded random
moments of its first 5 s: before its worker exists, while the worker imports torch
(before the fix, the worker asked to die with its parent only after that import, ~2 s),
and while it trains. Every process colabrun started carries a unique marker in its
environment (children inherit it), so after each kill a scan of ``/proc`` finds any that
stayed behind. The default tier kills 3 times: very early (0.1-0.3 s after the start, and
as early in the worker's life, the window that failed) and at a random moment of the 5 s;
the slow tier at 20 random moments.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import REPO, digits_spec, write_spec_file

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

#: the environment variable whose value marks this test's processes
TAG = "COLABRUN_TEST_TAG"
#: the kills fall in the supervisor's first seconds
WINDOW_S = 5.0
#: how long the processes left behind get to go after the kill
GRACE_S = 3.0
SEED = 20240611


def test_early_and_random_kills_leave_no_process_behind(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    _kill_at([(rng.uniform(0.1, 0.3), False),  # the supervisor is still importing
              (rng.uniform(0.1, 0.3), True),  # the worker is: before the fix, it stayed
              (rng.uniform(0.0, WINDOW_S), False)], tmp_path)


@pytest.mark.slow
def test_twenty_random_kills_leave_no_process_behind(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    _kill_at([(at, False) for at in sorted(rng.uniform(0.0, WINDOW_S) for _ in range(20))],
             tmp_path)


def _kill_at(moments: list[tuple[float, bool]], tmp_path: Path) -> None:
    """Run and SIGKILL a supervisor at each moment (seconds, and whether they count from
    the worker's start instead of the supervisor's); fail if any kill left a process."""
    orphans: list[str] = []
    for i, (at, from_worker) in enumerate(moments):
        left = _run_and_kill(tmp_path / f"kill-{i}", at, from_worker=from_worker)
        if left:
            orphans.append(f"kill {i + 1}, {at:.2f} s after the "
                           f"{'worker' if from_worker else 'supervisor'} started, left {left}")
    assert not orphans, (f"{len(orphans)} of {len(moments)} kills left a process "
                         "behind:\n" + "\n".join(orphans))


def _run_and_kill(folder: Path, at: float, *, from_worker: bool) -> list[str]:
    """Start ``colabrun run`` on a long supervised digits job, SIGKILL it ``at`` seconds
    after its start (or its worker's), and return what still runs with its marker
    ``GRACE_S`` later."""
    folder.mkdir(parents=True)
    spec = digits_spec(folder / "runs", epochs=200, supervise=True)
    spec_file = write_spec_file(folder / "spec.json", spec)
    tag = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", TAG: tag}
    started = time.monotonic()
    job = subprocess.Popen(
        [sys.executable, "-m", "colabrun", "run", str(spec_file), "--root", str(folder / "runs")],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if from_worker:
            started = _worker_started(job, tag)
        try:
            job.wait(timeout=max(0.0, at - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            job.kill()
        else:
            raise AssertionError(f"the job exited ({job.returncode}) before its kill at "
                                 f"{at:.2f} s: it must train for longer than {WINDOW_S} s")
        job.wait()  # reap it: our own child is no orphan, and no zombie either
        deadline = time.monotonic() + GRACE_S
        while (left := tagged(tag)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [f"pid {pid} ({command})" for pid, command in left.items()]
    finally:
        if job.poll() is None:  # a failed start: a Popen left running fails a later test
            job.kill()
            job.wait()
        for pid in tagged(tag):  # what a failing run left: it must not train on
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _worker_started(job: subprocess.Popen[bytes], tag: str, timeout: float = 120.0) -> float:
    """When (``time.monotonic``) a process of ``job``'s other than itself appeared."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        if set(tagged(tag)) - {job.pid}:
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"no worker started (the supervisor's exit: {job.returncode})")


def tagged(tag: str) -> dict[int, str]:
    """The live processes whose environment holds ``TAG=tag``, with their command lines.

    A zombie is not among them: its environment is gone with its memory, and only its
    reaping is left, the job of its parent (of init, for an orphan).
    """
    marker = f"{TAG}={tag}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = command[:120]
    return found
