"""Whether a checkpoint is due: a pure decision over counters and times."""

from __future__ import annotations

from jobs.spec import CheckpointPolicy


def save_due(
    policy: CheckpointPolicy,
    *,
    steps_since_save: int,
    seconds_since_save: float,
    at_epoch_end: bool,
) -> str | None:
    """The reason a checkpoint is due now, or ``None``.

    Args:
        policy: the spec's checkpoint policy.
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        at_epoch_end: whether this boundary closes an epoch.

    Returns:
        ``"epoch_end"``, ``"every_steps"``, ``"every_s"`` or ``None``. Within an
        epoch, a boundary with no new step is never due (nothing new to save);
        an epoch end is due even so, since the position moved to the next epoch.
    """
    if steps_since_save <= 0 and not at_epoch_end:
        return None
    if at_epoch_end and policy.at_epoch_end:
        return "epoch_end"
    if policy.every_steps is not None and steps_since_save >= policy.every_steps:
        return "every_steps"
    if policy.every_s is not None and steps_since_save > 0 and (
        seconds_since_save >= policy.every_s
    ):
        return "every_s"
    return None
