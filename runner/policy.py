"""Whether a checkpoint is due: a pure decision over counters and times."""

from __future__ import annotations

from jobs.spec import CheckpointPolicy


def save_due(
    policy: CheckpointPolicy,
    *,
    steps_since_save: int,
    seconds_since_save: float,
    at_epoch_end: bool,
    save_cost_s: float | None = None,
    writer_busy: bool = False,
) -> str | None:
    """The reason a checkpoint is due now, or ``None``.

    Args:
        policy: the spec's checkpoint policy.
        steps_since_save: optimizer steps since the last save (or the start).
        seconds_since_save: monotonic seconds since the last save (or the start).
        at_epoch_end: whether this boundary closes an epoch.
        save_cost_s: the measured cost of one save (see :func:`adaptive_interval_s`);
            ``None`` until one was measured.
        writer_busy: whether the last save is still being written.

    Returns:
        ``"epoch_end"``, ``"every_steps"``, ``"every_s"``, ``"adaptive"`` or ``None``. Within an
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
    if policy.max_overhead is not None and steps_since_save > 0 and not writer_busy:
        if save_cost_s is None or seconds_since_save >= adaptive_interval_s(
                policy.max_overhead, save_cost_s):
            return "adaptive"
    return None


def adaptive_interval_s(max_overhead: float, save_cost_s: float) -> float:
    """Seconds between saves that keep their cost at ``max_overhead`` of training time.

    A save costing ``c`` seconds every ``T`` seconds costs ``c / (T + c)`` of the
    time; at most ``m`` when ``T >= c (1 - m) / m``. The adaptive policy saves at
    the first boundary after that, and never while the last save is still being
    written (so the background work stays bounded too). The first save of a
    session is taken at once: it measures the cost.
    """
    return save_cost_s * (1 - max_overhead) / max_overhead


def save_cost_s(*, stall_s: float, background_cpu_s: float, cores: int) -> float:
    """What one save costs training, in seconds of its time.

    The stall is paid in full. The background work (serialising, hashing,
    writing, uploading) runs beside training and competes with it for the GIL,
    the memory bus and the cores: counted in full on one or two cores, shared
    out over the spare cores on bigger machines.
    """
    return stall_s + background_cpu_s / max(1, cores - 1)
