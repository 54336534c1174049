"""``import colabrun``: the names a notebook needs, re-exported from the packages.

Every colabrun module lives under this one name: ``colabrun.jobs`` (what to run),
``colabrun.state`` (what is durable), ``colabrun.runner`` (how and when); see
docs/contributing.md for the map.
"""

from typing import TYPE_CHECKING, Any

from colabrun.jobs import JobSpec, load_spec
from colabrun.runner import load, metrics, resume, run, status

if TYPE_CHECKING:
    from colabrun.runner.ending import RunResult

__all__ = ["JobSpec", "RunResult", "load", "load_spec", "metrics", "resume", "run", "status"]


def __getattr__(name: str) -> Any:
    """``RunResult``, imported when first asked for: its module imports torch, and every
    ``colabrun`` command, the light ones too (``stop``, ``status``), imports this package."""
    if name == "RunResult":
        from colabrun.runner.ending import RunResult

        return RunResult
    raise AttributeError(f"module 'colabrun' has no attribute {name!r}")
