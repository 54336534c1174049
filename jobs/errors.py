"""The one error tree of colabrun.

Every error a user can meet derives from :class:`ColabrunError`; leaves also
subclass the nearest builtin so that ``except OSError`` and friends still work.
Each message says what went wrong, where, and how to fix it. Each error class
carries the process exit code the CLI uses for it (see docs/cli.md)::

    ColabrunError                         exit 1
    ├── SpecError(ValueError)             exit 2   bad spec file or field
    │   └── SpecMismatch                  exit 2   spec changed what defines the job
    ├── EntrypointError(ImportError)      exit 2   entrypoint does not import / take the handle
    ├── JobNotFound(LookupError)          exit 2   no such job under the root
    ├── StorageError(OSError)             exit 5   the root cannot be read or written
    │   └── StorageTimeout(TimeoutError)  exit 5   a storage call hung past its timeout
    ├── StateCorrupt(ValueError)          exit 5   state.json does not parse
    ├── CheckpointError(ValueError)       exit 5   a checkpoint failed verification
    ├── TrainingError(RuntimeError)       exit 1   the user's training code raised
    ├── HandleError(RuntimeError)         exit 1   the handle was used the wrong way
    │
    │   defined beside the code that raises them:
    ├── DeviceUnavailable(RuntimeError)   exit 2   platform: cuda asked, none here
    ├── FaultSpecError(ValueError)        exit 2   faults: a bad COLABRUN_KILL_AT
    ├── DatasetError(SpecError)           exit 2   datasets: a malformed file
    │   └── DatasetMissing(FileNotFoundError)      a data file is not there
    ├── PlotUnavailable(ImportError)      exit 2   plots: matplotlib is missing
    ├── NothingToPlot(ValueError)         exit 2   plots: no metrics logged yet
    ├── LeaseHeld(RuntimeError)           exit 4   lease: another runner owns the job
    ├── LeaseLost(RuntimeError)           exit 4   lease: the job was taken over
    └── IllegalTransition(RuntimeError)   exit 1   transitions: a bug, never the user's
"""

from __future__ import annotations


class ColabrunError(Exception):
    """Root of every error colabrun raises on purpose."""

    exit_code: int = 1

    def _render_traceback_(self) -> list[str]:
        """How IPython (a notebook cell) shows it: one line, no traceback; the message
        says what went wrong and what to do."""
        return [f"{type(self).__name__}: {self}"]


class SpecError(ColabrunError, ValueError):
    """A job spec (file or object) is malformed or invalid."""

    exit_code = 2


class SpecMismatch(SpecError):
    """The spec changed fields that define the model or data of an existing job."""


class EntrypointError(ColabrunError, ImportError):
    """The spec's entrypoint cannot be imported (here, or in the worker), is not callable, or
    cannot be called with the run handle."""

    exit_code = 2


class JobNotFound(ColabrunError, LookupError):
    """No job of that name lives under the root."""

    exit_code = 2


class StorageError(ColabrunError, OSError):
    """The root folder could not be read or written, even after retries."""

    exit_code = 5


class StorageTimeout(StorageError, TimeoutError):
    """A storage call did not return within its timeout (a dying mount can hang)."""


class StateCorrupt(ColabrunError, ValueError):
    """``state.json`` exists but does not parse; it is never silently replaced."""

    exit_code = 5


class CheckpointError(ColabrunError, ValueError):
    """A checkpoint is torn, truncated, missing or fails its sha256 check."""

    exit_code = 5


class TrainingError(ColabrunError, RuntimeError):
    """The user's training function raised; the original is chained."""


class HandleError(ColabrunError, RuntimeError):
    """The training handle was used in a way it does not support."""
