"""Hygiene for every test: no leaked threads, no stray warnings (filterwarnings=error)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import torch

from colabrun.state.resilience import IDLE_NAME

torch.set_num_threads(1)  # as in tests.helpers.run_cli: tiny models, loaded 2-core machines
# no TensorBoard files or plot per run (tests/runner/train/test_report_sinks.py turns them on):
# matplotlib and tensorboard imported in every worker would cost the suite minutes
os.environ["COLABRUN_REPORTS"] = "0"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (a writer or heartbeat not joined). A
    storage lane waiting for its next call is kept on purpose (state/resilience.py); one
    stuck in a call keeps that call's name, and counts."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.is_alive() and t.name != IDLE_NAME]
    for thread in leaked:
        thread.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(autouse=True)
def restore_torch_determinism() -> Iterator[None]:
    """Runs switch torch's deterministic mode on; put it back for the next test."""
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    changed = (torch.are_deterministic_algorithms_enabled() != mode
               or torch.is_deterministic_algorithms_warn_only_enabled() != warn_only)
    if changed:  # the call costs seconds the first time: make it only when needed
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
