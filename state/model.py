"""The persisted state file's model (``state.json``), versioned by ``schema_version``.

Times are Unix seconds from the injected clock's wall time. The model is
frozen: every change goes through a pure function of :mod:`colabrun.state.transitions`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SCHEMA_VERSION = 1


class Status(str, Enum):
    """Where a job stands. Legal moves are in :data:`colabrun.state.transitions.LEGAL_MOVES`."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Lease(_Frozen):
    """Who owns the job now; refreshed by the owner's heartbeat."""

    owner: str = Field(description="Runtime id of the owner.")
    host: str
    pid: int
    generation: int = Field(ge=0)
    acquired_at: float
    heartbeat_at: float
    duration_s: float = Field(gt=0)
    token: str = Field(default="", description="Unique per takeover: fences a same-generation "
                       "rival that read the same stale state (docs/concepts.md#the-lease).")


class Session(_Frozen):
    """One runtime's stint on the job: from its start to why it ended."""

    index: int = Field(ge=0)
    runtime_id: str
    host: str
    pid: int
    device: str
    generation: int = Field(ge=0)
    started_at: float
    start_step: int = Field(ge=0)
    resumed_from: str | None = Field(default=None, description="Checkpoint it resumed from.")
    deadline_at: float | None = Field(default=None, description="When this runtime's budget "
                                      "ends (Unix time), if it has one.")
    ended_at: float | None = None
    end_step: int | None = None
    end_reason: str | None = None


class CheckpointRecord(_Frozen):
    """A committed checkpoint: its manifest verified when it was recorded."""

    name: str
    step: int = Field(ge=0)
    epoch: int = Field(ge=0, description="Completed epochs at this checkpoint.")
    batch: int = Field(ge=0, description="Batches consumed in the current epoch.")
    generation: int = Field(ge=0)
    size_bytes: int = Field(ge=0)
    sha256: str
    created_at: float
    metrics: dict[str, float] = Field(
        default_factory=dict, description="The newest value of each metric logged before "
        "this save (what checkpoint.keep_best compares).")


class Progress(_Frozen):
    """How far the job got, as of its newest committed checkpoint."""

    epochs_total: int = Field(gt=0)
    epochs_done: int = Field(default=0, ge=0)
    global_step: int = Field(default=0, ge=0)


class Timings(_Frozen):
    """Learned durations (exponential moving averages), in seconds."""

    step_s: float | None = None
    save_s: float | None = None
    load_s: float | None = None


class JobState(_Frozen):
    """Everything durable about a job besides its checkpoints' bytes."""

    schema_version: int = SCHEMA_VERSION
    name: str
    status: Status = Status.PENDING
    spec_fingerprint: str
    defining: dict[str, Any] = Field(description="The spec fields the fingerprint covers.")
    created_at: float
    updated_at: float
    generation: int = Field(default=0, ge=0, description="Bumped by every new session.")
    progress: Progress
    sessions: tuple[Session, ...] = ()
    checkpoints: tuple[CheckpointRecord, ...] = Field(
        default=(), description="Committed checkpoints, oldest first."
    )
    timings: Timings = Timings()
    lease: Lease | None = None
    reason: str | None = Field(default=None, description="Why the job stopped or failed.")
    result: JsonValue = Field(default=None, description="What the training function returned, "
                              "when JSON (kept when the job completed; returned by a re-run).")

    @property
    def latest_checkpoint(self) -> CheckpointRecord | None:
        """The newest committed checkpoint on record, if any."""
        return max(self.checkpoints, key=lambda r: (r.step, r.generation, r.created_at),
                   default=None)

    def is_done_for(self, epochs: int) -> bool:
        """Completed, and ``epochs`` asks for no more than were trained."""
        return self.status is Status.COMPLETED and epochs <= self.progress.epochs_total
