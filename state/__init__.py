"""WHAT IS DURABLE: the state file, the checkpoint store, the storage edge."""

from state.checkpoints import CheckpointStore, Manifest
from state.model import CheckpointRecord, JobState, Status
from state.statefile import StateFile
from state.storage import Fs, OsFs, Storage

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
