"""HOW and WHEN: running a job in the foreground, resuming it, the CLI."""

from runner.api import resume, run
from runner.clock import Clock, FakeClock, SystemClock
from runner.session import RunResult

__all__ = ["Clock", "FakeClock", "RunResult", "SystemClock", "resume", "run"]
