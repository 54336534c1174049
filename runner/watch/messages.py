"""What the supervisor and its worker say to each other over their socket.

Frozen dataclasses, pickled by :meth:`multiprocessing.connection.Connection.send`
(docs/concepts.md#supervisor-and-worker). The worker sends :class:`Output` (a line it
printed), :class:`Beat` (its progress, every ``watchdog.heartbeat_s``) and, last,
:class:`Ended`, or :class:`NotStarted` when it could not begin; the supervisor sends
:class:`StopRequest` and :class:`CheckpointRequest`.
Our own types cross as themselves; the two things the user's code produced (the training
function's return value, an exception it raised) cross as cloudpickled blobs
(:class:`Pickled`, :class:`~colabrun.runner.watch.remote_error.ErrorReport`), so one that
cannot be loaded in the supervisor costs only itself, never the message around it.

Why the supervisor killed a worker is a :class:`KillReason` with its detail, a :class:`Kill`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, get_args

import cloudpickle

from colabrun.runner.watch.remote_error import ErrorReport
from colabrun.runner.watch.restarts import Exit

#: where the training loop is (docs/concepts.md#heartbeat-and-status-line)
Phase = Literal["setup", "load", "train", "save", "between"]
PHASES: tuple[Phase, ...] = get_args(Phase)


def phase_of(name: str) -> Phase:
    """``name`` as a :data:`Phase`; an unknown name (a bug) is watched like ``train``.

    Args:
        name: the phase the loop wrote into its live progress.

    Returns:
        The phase; never one exempt from hang detection unless ``name`` is one.
    """
    return name if name in PHASES else "train"


@dataclass(frozen=True)
class Pickled:
    """A user's object, cloudpickled in the worker, loaded on demand in the supervisor."""

    blob: bytes

    @classmethod
    def of(cls, value: Any) -> Pickled | None:
        """``value`` pickled, or ``None`` when it cannot be (it is then dropped).

        Args:
            value: what the training function returned.

        Returns:
            The blob, or ``None``.
        """
        try:
            return cls(cloudpickle.dumps(value))
        except Exception:  # anything a user's __reduce__ raises: the value is optional
            return None

    def load(self) -> Any:
        """The object, or ``None`` when it cannot be loaded here (a class the supervisor
        cannot import)."""
        try:
            return cloudpickle.loads(self.blob)
        except Exception:
            return None


# -- worker -> supervisor ----------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Lines the worker printed, for the supervisor to print (a notebook shows only what
    the kernel's own process prints)."""

    text: str


@dataclass(frozen=True)
class Beat:
    """The worker's progress at one heartbeat."""

    step: int
    epoch: int
    phase: Phase
    step_s: float | None = None
    last_save: str | None = None
    batch: int = 0
    batches_in_epoch: int | None = None
    epochs_total: int = 0
    #: the newest value of each metric logged (the bar shows them)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, int, Phase]:
        """What must change for the beat to count as progress: step, epoch or phase."""
        return (self.step, self.epoch, self.phase)


@dataclass(frozen=True)
class Ended:
    """How the worker's session ended: its last message."""

    exit: Exit
    detail: str
    exit_code: int = 0
    micro_batches: int = 1
    value: Pickled | None = None
    error: ErrorReport | None = None


#: the exit status of a worker that sent :class:`NotStarted`
NOT_STARTED_EXIT = 122
#: the tag of a :class:`NotStarted` sent as a plain tuple (:meth:`NotStarted.wire`)
NOT_STARTED = "colabrun: the worker did not start"


@dataclass(frozen=True)
class NotStarted:
    """The worker could not begin: importing colabrun, or loading its task (the training
    function and the modules it uses), raised. Not a crash: a new worker fails the same way.

    A worker that cannot import colabrun cannot build this class either: it sends
    :meth:`wire`'s plain tuple, which :meth:`from_wire` reads.
    """

    detail: str          # what failed: one line
    hint: str = ""       # how to fix it, as far as the worker can tell
    traceback: str = ""
    missing: str = ""    # the module a ModuleNotFoundError names, if one does

    def wire(self) -> tuple[str, str, str, str, str]:
        """This message as builtins only."""
        return (NOT_STARTED, self.detail, self.hint, self.traceback, self.missing)

    @classmethod
    def from_wire(cls, message: object) -> NotStarted | None:
        """The message :meth:`wire` made, or ``None`` for anything else.

        Args:
            message: what came over the socket.
        """
        if (isinstance(message, tuple) and len(message) == 5 and message[0] == NOT_STARTED
                and all(isinstance(part, str) for part in message)):
            return cls(*message[1:])
        return None


WorkerMessage = Output | Beat | Ended | NotStarted


# -- supervisor -> worker ----------------------------------------------------------------


@dataclass(frozen=True)
class StopRequest:
    """Save at the next boundary, then stop."""

    reason: str


@dataclass(frozen=True)
class CheckpointRequest:
    """Save at the next boundary and go on."""


SupervisorMessage = StopRequest | CheckpointRequest


# -- kills -------------------------------------------------------------------------------


class KillReason(str, Enum):
    """Why the supervisor killed a worker."""

    HUNG = "hung"                                # the watchdog saw no progress
    INTERRUPTED_TWICE = "interrupted twice"      # a second interrupt: stop at once
    FENCED = "fenced"                            # another runner took the job over
    SUPERVISOR_STOPPED = "supervisor stopped"    # the supervisor itself is unwinding


@dataclass(frozen=True)
class Kill:
    """A kill and what it says to the user (``hung for 21 s at step 30``)."""

    reason: KillReason
    detail: str

    @classmethod
    def because(cls, reason: KillReason) -> Kill:
        """A kill whose detail is the reason's own words."""
        return cls(reason, reason.value)
