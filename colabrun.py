"""``import colabrun``: the names a notebook needs, re-exported from the packages."""

from jobs import JobSpec, load_spec
from runner import RunResult, resume, run

__all__ = ["JobSpec", "RunResult", "load_spec", "resume", "run"]
