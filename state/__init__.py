"""WHAT IS DURABLE: the state file, the checkpoint store, the storage edge."""

from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.filesystem import Fs, OsFs
from colabrun.state.manifest import Manifest
from colabrun.state.model import CheckpointRecord, JobState, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage

__all__ = [
    "CheckpointRecord",
    "CheckpointStore",
    "Fs",
    "JobState",
    "Manifest",
    "OsFs",
    "StateFile",
    "Status",
    "Storage",
]
