"""Where the training loop is: a pure value, moved by the loop, saved with each checkpoint.

Saves and restores happen at two kinds of program point (:data:`IN_EPOCH`,
:data:`EPOCH_START`); a checkpoint taken between epochs records batch 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["in_epoch", "epoch_start"]
#: inside ``run.batches()``: between two batches (before the next is fetched) or after the last
IN_EPOCH: Where = "in_epoch"
#: inside ``run.epochs()``: between two epochs
EPOCH_START: Where = "epoch_start"


@dataclass(frozen=True)
class Position:
    """Epochs done, batches done in the current epoch, optimizer steps in all sessions."""

    epoch: int = 0
    batch: int = 0
    step: int = 0

    # Built directly, not with dataclasses.replace (which looks the fields up at each call):
    # the loop moves twice per step.

    def after_step(self) -> Position:
        """One optimizer step later."""
        return Position(self.epoch, self.batch, self.step + 1)

    def after_batch(self) -> Position:
        """One batch of the current epoch later."""
        return Position(self.epoch, self.batch + 1, self.step)

    def after_epoch(self, epoch: int) -> Position:
        """Epoch ``epoch`` done: the next one starts at its first batch."""
        return Position(epoch + 1, 0, self.step)

    def saved_at(self, where: str) -> Position:
        """The position a checkpoint taken at ``where`` records (batch 0 between epochs)."""
        return self if where == IN_EPOCH else Position(self.epoch, 0, self.step)
