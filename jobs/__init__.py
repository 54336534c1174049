"""WHAT to run: job specs, their loading, entrypoints, the handle contract, errors."""

from jobs.entrypoint import resolve_entrypoint
from jobs.errors import ColabrunError, SpecError
from jobs.handle import Stateful, TrainingRun
from jobs.loading import load_spec, validate_spec
from jobs.spec import CheckpointPolicy, JobSpec

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
