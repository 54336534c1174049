"""The runtime's deadline: its budget, and when the final save must start. Pure.

A runtime's budget counts from when *the runtime* started (docs/colab.md#limits),
not this process. Nothing inside a Colab VM can read the time it has left
(fact 1), so the budget is the platform's ceiling or the spec's; periodic
saves remain the main defence, and this is the bonus save before the cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0

#: The ceiling of each platform; ``None``: no known cutoff.
PLATFORM_BUDGETS_S: dict[str, float | None] = {
    "colab": 12 * HOUR,       # free tier: "at most 12 hours" (docs/colab.md#limits)
    "colab_pro": 24 * HOUR,   # Pro/Pro+: up to 24 h while compute units last
    "kaggle": 12 * HOUR,
    "local": None,
}

#: multiplies the learned time of one step plus one save
SAFETY_FACTOR = 1.5
#: added on top, for what was not learned yet (seconds)
MARGIN_S = 120.0
#: assumed for a save never measured yet (seconds)
UNMEASURED_SAVE_S = 60.0
#: the margin, and the save assumed before one is measured, are each at most this share
#: of the budget: a short budget (``budget_s: 25``) still trains, a 12-hour one is unchanged
BUDGET_SHARE = 0.1


def budget_s(platform: str, *, spec_budget_s: float | None) -> float | None:
    """The budget in seconds: the spec's if given, else the platform's ceiling."""
    if spec_budget_s is not None:
        return spec_budget_s
    return PLATFORM_BUDGETS_S.get(platform)


@dataclass(frozen=True)
class Deadline:
    """When this runtime ends, and what one more step and save take."""

    ends_at: float | None
    safety: float = SAFETY_FACTOR
    margin_s: float = MARGIN_S
    assumed_save_s: float = UNMEASURED_SAVE_S

    @classmethod
    def of(cls, *, started_at: float, budget: float | None, margin_s: float = MARGIN_S,
           assumed_save_s: float = UNMEASURED_SAVE_S) -> Deadline:
        """The deadline of a runtime started at ``started_at`` with ``budget`` seconds.

        The margin and the save assumed before one is measured are each capped at
        :data:`BUDGET_SHARE` of the budget: the defaults are sized for hours, and would
        leave a budget of a minute nothing to train with.
        """
        if budget is None:
            return cls(ends_at=None, margin_s=margin_s, assumed_save_s=assumed_save_s)
        cap = BUDGET_SHARE * budget
        return cls(ends_at=started_at + budget, margin_s=min(margin_s, cap),
                   assumed_save_s=min(assumed_save_s, cap))

    def time_left(self, now: float) -> float | None:
        """Seconds until the cutoff, or ``None`` without one."""
        return None if self.ends_at is None else self.ends_at - now

    def needed_s(self, *, step_s: float | None, save_s: float | None) -> float:
        """Time one more step plus a full save take, with the safety factor and margin."""
        step = step_s or 0.0
        save = self.assumed_save_s if save_s is None else save_s
        return (step + save) * self.safety + self.margin_s

    def must_save_now(self, now: float, *, step_s: float | None, save_s: float | None) -> bool:
        """Whether the final save must start at this boundary."""
        left = self.time_left(now)
        return left is not None and left <= self.needed_s(step_s=step_s, save_s=save_s)
