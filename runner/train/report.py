"""The plain line said at each epoch's end: progress, metric means, the newest checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from colabrun.runner.commands.report import human_age
from colabrun.runner.train.position import Position


class EpochMeans:
    """The values each metric took in the current epoch."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}

    def add(self, metrics: Mapping[str, float]) -> None:
        """Values logged at one step."""
        for key, value in metrics.items():
            self._values.setdefault(key, []).append(float(value))

    def take(self) -> dict[str, float]:
        """Each metric's mean, in the order first logged; the epoch's values are dropped."""
        values, self._values = self._values, {}
        return {key: sum(v) / len(v) for key, v in values.items()}


@dataclass(frozen=True)
class Durability:
    """The newest save, and the newest that reached the root (all a dead runtime leaves)."""

    newest_step: int | None = None
    durable_step: int | None = None
    #: wall time the durable one reached the root
    durable_at: float | None = None

    def describe(self, *, now: float) -> str:
        """``saved step-460 (local); durable: step-440, 3 s ago``, or ``saved step-460
        (durable)`` once the root has it; empty before the first save."""
        if self.newest_step is None:
            return ""
        saved = f"saved step-{self.newest_step}"
        if self.durable_step is not None and self.durable_step >= self.newest_step:
            return f"{saved} (durable)"
        if self.durable_step is None or self.durable_at is None:
            return f"{saved} (local); durable: none yet"
        age = human_age(max(0.0, now - self.durable_at))
        return f"{saved} (local); durable: step-{self.durable_step}, {age} ago"


def epoch_line(position: Position, *, epochs: int, means: Mapping[str, float],
               saved: str) -> str:
    """The line said at an epoch's end (a pure function).

    Args:
        position: where the loop is (just after the epoch).
        epochs: the epochs of the job.
        means: each metric's mean over the epoch.
        saved: what is saved, and what of it is durable (:meth:`Durability.describe`).

    Returns:
        For example ``epoch 2/5 done, step 30: loss 0.4123; saved step-30 (local);
        durable: step-20, 3 s ago``.
    """
    text = ", ".join(f"{key} {mean:.4g}" for key, mean in means.items())
    return (f"epoch {position.epoch}/{epochs} done, step {position.step}"
            + (f": {text}" if text else "") + (f"; {saved}" if saved else ""))
