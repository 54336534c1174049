"""HOW and WHEN: running a job in the foreground, resuming it, the CLI."""

from typing import TYPE_CHECKING, Any

from colabrun.runner.api import load, metrics, resume, run, status
from colabrun.runner.clock import Clock, FakeClock, SystemClock

if TYPE_CHECKING:
    from colabrun.runner.ending import RunResult

__all__ = ["Clock", "FakeClock", "RunResult", "SystemClock", "load", "metrics", "resume", "run",
           "status"]


def __getattr__(name: str) -> Any:
    """``RunResult``, imported when first asked for: its module imports torch, which
    the light commands (``colabrun stop``, ``status``) never need."""
    if name == "RunResult":
        from colabrun.runner.ending import RunResult

        return RunResult
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
