"""The job spec: what to run, declared once, frozen.

A :class:`JobSpec` is the whole configuration of a job. It is validated by
pydantic (unknown fields are rejected), frozen, and fingerprinted over the
fields that define the model and the data, so a later run can tell "train
longer" (allowed) from "train something else" (refused unless forced).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from colabrun.jobs.entrypoint import current_entrypoint

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ENTRYPOINT_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

#: Fields whose change means a different model or data; see :func:`defining_fields`.
DEFINING_FIELDS: tuple[str, ...] = ("entrypoint", "params", "seed")

Device = Literal["auto", "cuda", "cpu"]
#: ``checkpoint.at_epoch_end``'s default: epoch-end saves within the adaptive budget
AUTO: Literal["auto"] = "auto"
Platform = Literal["auto", "colab", "colab_pro", "kaggle", "local"]


class KeepBest(BaseModel):
    """Which checkpoint is the best, kept out of rotation: the one whose ``metric`` (the
    newest value logged before it was saved) is lowest (``min``) or highest (``max``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(min_length=1, description="A metric the training function logs "
                        "(run.step(...) or run.log(...)), e.g. 'val_loss'.")
    mode: Literal["min", "max"] = Field(default="min", description="'min': lower is better "
                                        "(a loss); 'max': higher is better (an accuracy).")


class CheckpointPolicy(BaseModel):
    """When checkpoints are taken and how many are kept.

    Saves happen at step boundaries when any trigger fires. Periodic saves
    are the main defence on Colab, where a runtime can vanish without a
    signal (docs/colab.md#limits).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    every_steps: int | None = Field(
        default=None, gt=0, strict=True, description="Save every N optimizer steps (None: off)."
    )
    every_s: float | None = Field(
        default=300.0, gt=0, description="Save when this many seconds passed since the last save."
    )
    at_epoch_end: bool | Literal["auto"] = Field(
        default=AUTO,
        description="Save after every epoch (true), after none as such (false), or 'auto': "
        "after every epoch that lasted at least the adaptive interval (a save's cost / "
        "max_overhead), so that epochs of a fraction of a second do not each spend a save "
        "(their adaptive saves checkpoint them); every epoch when max_overhead is null or "
        "keep_best is set.",
    )
    max_overhead: float | None = Field(
        default=0.02, gt=0, lt=1,
        description="Adaptive cadence: save as often as keeps checkpointing's measured cost "
        "(the stall plus the background work, uploads included) under this fraction of "
        "training time, each save as soon as the root can take it; None: off (the other "
        "triggers alone).",
    )
    snapshot: Literal["auto", "copy", "fork"] = Field(
        default="auto",
        description="How a save snapshots state: 'copy' into reusable host buffers (pinned for "
        "CUDA), 'fork' a copy-on-write writer process (CPU tensors, Linux), 'auto' forks "
        "states of 128 MiB or more that training mostly leaves as they are (at least half "
        "of their bytes frozen parameters), and copies the others.",
    )
    keep_last: int = Field(
        default=3, ge=1, strict=True,
        description="Committed checkpoints to keep; older ones are rotated out.",
    )
    keep_best: KeepBest | None = Field(
        default=None,
        description="Also keep the best checkpoint by a logged metric, out of rotation "
        "(colabrun.load(name, best=True) reads it).",
    )


class WatchdogPolicy(BaseModel):
    """How the supervisor watches the worker, restarts it, and handles CUDA OOM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_restarts: int = Field(
        default=3, ge=0,
        description="Restarts in a row without a new checkpoint before the job fails.",
    )
    stall_floor_s: float = Field(
        default=300.0, gt=0, description="Never call the loop hung before this many seconds."
    )
    stall_factor: float = Field(
        default=20.0, gt=1,
        description="Hung after this many times the longest learned gap between steps.",
    )
    setup_s: float = Field(
        default=1800.0, gt=0,
        description="How long the code before the first batch may run (loading data, "
        "building the model) before it counts as hung.",
    )
    heartbeat_s: float = Field(
        default=1.0, gt=0, description="How often the worker reports progress."
    )
    status_every_s: float = Field(
        default=60.0, gt=0, description="How often a status line is printed."
    )
    oom_halve_batch: bool = Field(
        default=True,
        description="On CUDA OOM, restart with half the micro-batch and twice the "
        "accumulation (the effective batch stays the same).",
    )


class DistributedPolicy(BaseModel):
    """Data-parallel training: how many ranks define the math, and how many processes run
    them on this runtime (docs/concepts.md#several-processes).

    ``ranks`` is part of what the job trains (each optimizer step averages the gradients of
    ``ranks`` batches); ``processes`` is only how this runtime runs them: a job started
    with 2 processes on a runtime with two GPUs continues on a runtime with one, as 2
    virtual ranks in one process, and back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ranks: int = Field(
        default=1, ge=1, le=64, strict=True,
        description="Data-parallel ranks the math is defined by: each optimizer step "
        "averages the gradients of one batch per rank (the loader's batch_size is per rank).",
    )
    processes: int | Literal["auto"] = Field(
        default="auto",
        description="Processes to run the ranks on, on this runtime: each runs ranks / "
        "processes of them as virtual ranks. 'auto': one per GPU (the most that divides "
        "ranks), else 1.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto", description="torch.distributed backend: 'auto' is NCCL on CUDA, "
        "gloo on the CPU.",
    )
    allow_inexact: bool = Field(
        default=False,
        description="Continue when a resume on another number of processes cannot be "
        "bit-exact (more than 2 ranks: the gradients are summed in another order).",
    )

    @field_validator("processes")
    @classmethod
    def _check_processes(cls, value: int | str) -> int | str:
        if isinstance(value, bool) or (isinstance(value, int) and value < 1):
            raise ValueError(f"{value!r} is not a number of processes; give 1 or more, "
                             "or 'auto'")
        return value

    @model_validator(mode="after")
    def _check_divides(self) -> DistributedPolicy:
        if isinstance(self.processes, int) and self.ranks % self.processes:
            raise ValueError(
                f"processes: {self.processes} does not divide ranks: {self.ranks}; each "
                "process runs the same number of ranks: give a divisor of ranks, or 'auto'")
        return self


class JobSpec(BaseModel):
    """A training job: which function to run, with what, for how long, saved how.

    Build it in Python (``JobSpec(name=..., entrypoint=train, epochs=5)``) or
    load it from YAML/TOML/JSON with :func:`jobs.load_spec`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(description="Job name: letters, digits, '-' and '_' (the job's folder).")
    entrypoint: str | SkipJsonSchema[Callable[..., Any]] = Field(
        description="'package.module:function' taking the run handle, or the function itself."
    )
    # strict ints: in lax mode `epochs: yes` (YAML's true) would silently mean 1 epoch
    epochs: int = Field(
        gt=0, strict=True, description="Total epochs; raise it later to train longer."
    )
    params: dict[str, JsonValue] = Field(
        default_factory=dict, description="Passed to the training code as run.params."
    )
    seed: int = Field(
        default=0, strict=True, description="Seeds Python, NumPy and torch, and the data order."
    )
    device: Device = Field(default="auto", description="'auto' (cuda if usable), 'cuda' or 'cpu'.")
    cpu_fallback: bool | None = Field(
        default=None,
        description="Run on CPU when no GPU is usable (default: yes for 'auto', no for 'cuda').",
    )
    deterministic: bool = Field(
        default=True, description="Ask torch for deterministic algorithms (bit-exact resume)."
    )
    checkpoint: CheckpointPolicy = Field(
        default_factory=CheckpointPolicy, description="When to save and how many to keep."
    )
    root: str | None = Field(
        default=None,
        description="Folder holding all jobs (default: Drive's MyDrive/colabrun on Colab, "
        "else ./colabrun-runs).",
    )
    local_dir: str | None = Field(
        default=None,
        description="Local disk folder where checkpoints are staged before their upload to "
        "the root (default: the system's temporary folder).",
    )
    platform: Platform = Field(
        default="auto",
        description="Whose runtime limits apply: 'auto' detects Colab (12 h), Kaggle (12 h) "
        "or local (none); say 'colab_pro' for 24 h.",
    )
    budget_s: float | None = Field(
        default=None, gt=0,
        description="This runtime's budget in seconds, counted from the runtime's start "
        "(default: the platform's).",
    )
    deadline_margin_s: float = Field(
        default=120.0, ge=0, description="Extra seconds kept free before the cutoff (at most "
        "a tenth of the budget, so a short budget_s still trains)."
    )
    supervise: bool = Field(
        default=True,
        description="Train in a watched child process (restarts, hang detection); false "
        "trains in this process, e.g. to debug.",
    )
    watchdog: WatchdogPolicy = Field(
        default_factory=WatchdogPolicy, description="Restarts, stalls and CUDA OOM."
    )
    lease_s: float = Field(
        default=45.0, gt=0,
        description="Seconds without a heartbeat after which another runtime may take the "
        "job over (a runtime that vanished); the owner's heartbeat comes every quarter of it. "
        "A runtime that finds the job held watches the heartbeat this long before it takes "
        "the job over or refuses.",
    )
    distributed: DistributedPolicy = Field(
        default_factory=DistributedPolicy,
        description="Data-parallel ranks and the processes that run them.",
    )
    description: str = Field(default="", description="Free text shown by `colabrun status`.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):  # `$` alone lets a trailing newline in
            raise ValueError(
                f"{value!r} is not a safe job name; use 1-64 letters, digits, '-' or '_' "
                "(no '/', '..' or spaces), e.g. 'digits-cnn'"
            )
        return value

    @field_validator("entrypoint")
    @classmethod
    def _check_entrypoint(cls, value: object) -> object:
        if isinstance(value, str) and not ENTRYPOINT_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not of the form 'package.module:function', "
                "e.g. 'colabrun.jobs.examples.digits:train'"
            )
        if not isinstance(value, str) and not callable(value):
            raise ValueError("must be 'package.module:function' or a callable")
        return current_entrypoint(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_params_json(self) -> JobSpec:
        json.dumps(self.params)  # JsonValue already guarantees it; keep the invariant explicit
        return self

    @model_validator(mode="after")
    def _check_processes_supervised(self) -> JobSpec:
        processes = self.distributed.processes
        if isinstance(processes, int) and processes > 1 and not self.supervise:
            raise ValueError(
                f"distributed.processes: {processes} needs supervise: true (the supervisor "
                "starts and watches the processes); set processes: 1 to debug in this "
                "process, running the ranks as virtual ranks")
        return self

    @property
    def allows_cpu_fallback(self) -> bool:
        """Whether a missing GPU may be replaced by the CPU (with a warning)."""
        if self.cpu_fallback is not None:
            return self.cpu_fallback
        return self.device == "auto"

    @property
    def entrypoint_ref(self) -> str:
        """The entrypoint as text: itself, or ``module:qualname`` of a function."""
        if isinstance(self.entrypoint, str):
            return self.entrypoint
        module = getattr(self.entrypoint, "__module__", "?")
        qualname = getattr(self.entrypoint, "__qualname__", repr(self.entrypoint))
        return f"{module}:{qualname}"

    def defining_fields(self) -> dict[str, Any]:
        """The fields that define the model and data, as plain JSON values (the ranks
        only when more than one: a job of one rank keeps the fingerprint it had before)."""
        fields: dict[str, Any] = {"entrypoint": self.entrypoint_ref, "params": self.params,
                                  "seed": self.seed}
        if self.distributed.ranks > 1:
            fields["ranks"] = self.distributed.ranks
        return fields

    def fingerprint(self) -> str:
        """sha256 over :meth:`defining_fields`; equal specs train the same thing."""
        canonical = json.dumps(self.defining_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        """The spec as JSON values, with the entrypoint as text (stored in the job folder)."""
        data = self.model_dump(mode="json", exclude={"entrypoint"})
        data["entrypoint"] = self.entrypoint_ref
        return data


def changed_defining_fields(old: dict[str, Any], new: JobSpec) -> list[str]:
    """Names of defining fields whose value in ``new`` differs from ``old``.

    Args:
        old: the defining fields recorded when the job was created.
        new: the spec of this run.

    Returns:
        The differing field names, sorted; empty when the job is the same.
    """
    current = new.defining_fields()
    recorded = dict(old)
    if isinstance(recorded.get("entrypoint"), str):  # a pre-0.2 name is the same function
        recorded["entrypoint"] = current_entrypoint(recorded["entrypoint"])
    changed = [name for name in DEFINING_FIELDS if recorded.get(name) != current[name]]
    if recorded.get("ranks", 1) != current.get("ranks", 1):
        changed.append("distributed.ranks")
    return sorted(changed)
