"""WHAT to run: job specs, their loading, entrypoints, the handle contract, errors."""

from colabrun.jobs.entrypoint import resolve_entrypoint
from colabrun.jobs.errors import ColabrunError, SpecError
from colabrun.jobs.handle import Stateful, TrainingRun
from colabrun.jobs.loading import load_spec, validate_spec
from colabrun.jobs.spec import CheckpointPolicy, JobSpec

__all__ = [
    "CheckpointPolicy",
    "ColabrunError",
    "JobSpec",
    "SpecError",
    "Stateful",
    "TrainingRun",
    "load_spec",
    "resolve_entrypoint",
    "validate_spec",
]
