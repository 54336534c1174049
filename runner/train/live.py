"""What the training thread shares with the rest of its process while it runs.

:class:`LiveProgress` is written by the training loop and read by the
heartbeat thread; :class:`Controls` is set by signal handlers and control
requests and read by the loop at its next boundary. Plain attribute writes
are atomic under the GIL, which is all the sharing these need. :class:`Wiring`
bundles them with the runner's hooks, for the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from colabrun.runner.train.report import Durability
from colabrun.runner.watch.deadline import Deadline
from colabrun.state.hooks import no_hook

if TYPE_CHECKING:  # it imports torch; the supervisor reads this module without it
    from colabrun.runner.train.save_guess import SaveGuess


class StopTraining(BaseException):
    """Unwinds the user's loop after a clean save (a request, an interrupt, the deadline).

    A ``BaseException`` so that a user's ``except Exception`` does not swallow it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LiveProgress:
    """Where the loop is now.

    ``phase``: ``setup`` (before the first batch), ``load`` (reading a
    checkpoint), ``train``, ``save``, or ``between`` (after an epoch's batches).
    """

    step: int = 0
    epoch: int = 0
    epochs_total: int = 0
    batch: int = 0
    batches_in_epoch: int | None = None
    phase: str = "setup"
    step_s: float | None = None
    last_save: str | None = None
    last_save_at: float | None = None
    #: what the newest save and the newest checkpoint under the root are
    saved: Durability = Durability()
    micro_batches: int = 1
    #: the newest value of each metric logged (the bar's postfix)
    metrics: dict[str, float] = field(default_factory=dict)


class Controls:
    """Requests for the loop: stop after a save, save now, and the deadline."""

    def __init__(self, deadline: Deadline | None = None) -> None:
        self.deadline = deadline or Deadline(ends_at=None)
        self.stop_reason: str | None = None
        self.checkpoint_requested = False
        self.interrupts = 0

    def request_stop(self, reason: str) -> None:
        """Save at the next boundary, then stop (the first reason wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def request_checkpoint(self) -> None:
        """Save at the next boundary and go on."""
        self.checkpoint_requested = True


@dataclass(frozen=True)
class Wiring:
    """What the runner connects a training loop to, besides its saver.

    Args:
        session: this session's index, stamped on metrics.
        on_point: called at ``"step"`` and ``"epoch.end"`` (fault injection).
        on_epoch_end: receives one progress line per epoch.
        on_progress: told after each step (the worker's heartbeat).
        controls: stop/checkpoint requests and the deadline, read at boundaries.
        progress: where the loop is, for the heartbeat thread.
        micro_batches: pieces ``run.split`` cuts each batch into (raised after a CUDA OOM).
        save_s: the learned duration of one save, for the deadline until measured.
        save_guess: without ``save_s``, a guess from the state's size and the root's speed.
    """

    session: int = 0
    on_point: Callable[[str], None] = no_hook
    on_epoch_end: Callable[[str], None] | None = None
    on_progress: Callable[[LiveProgress], None] | None = None
    controls: Controls = field(default_factory=Controls)
    progress: LiveProgress = field(default_factory=LiveProgress)
    micro_batches: int = 1
    save_s: float | None = None
    save_guess: SaveGuess | None = None
