"""The plain line said at each epoch's end: progress, metric means, the newest checkpoint."""

from __future__ import annotations

from collections.abc import Mapping

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


def epoch_line(position: Position, *, epochs: int, means: Mapping[str, float],
               newest: str | None) -> str:
    """The line said at an epoch's end (a pure function).

    Args:
        position: where the loop is (just after the epoch).
        epochs: the epochs of the job.
        means: each metric's mean over the epoch.
        newest: the newest checkpoint's name, if any.

    Returns:
        For example ``epoch 2/5 done, step 30: loss 0.4123; saved step-000000030-g0001``.
    """
    text = ", ".join(f"{key} {mean:.4g}" for key, mean in means.items())
    saved = f"; saved {newest}" if newest is not None else ""
    return (f"epoch {position.epoch}/{epochs} done, step {position.step}"
            + (f": {text}" if text else "") + saved)
