"""Which committed checkpoints to delete: a pure decision over records."""

from __future__ import annotations

from collections.abc import Sequence

from colabrun.state.model import CheckpointRecord


def plan_rotation(
    records: Sequence[CheckpointRecord], *, keep_last: int, newest_verified: str | None
) -> list[str]:
    """Names of checkpoints to rotate out, oldest first.

    Keeps the newest ``keep_last`` records, and never the newest verified one,
    whatever ``keep_last`` says: no path may delete the last good checkpoint.

    Args:
        records: committed checkpoints on record.
        keep_last: how many of the newest to keep (at least 1).
        newest_verified: name of the newest checkpoint known to verify, if any.

    Returns:
        The names to delete.
    """
    ordered = sorted(records, key=lambda r: (r.step, r.generation, r.created_at))
    doomed = ordered[: max(len(ordered) - max(keep_last, 1), 0)]
    return [r.name for r in doomed if r.name != newest_verified]
