"""WHAT IS DURABLE: the state file, the checkpoint store, the storage edge."""

from colabrun.state.checkpoints import CheckpointStore, Manifest
from colabrun.state.model import CheckpointRecord, JobState, Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Fs, OsFs, Storage

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
