"""Which checkpoints to delete: pure decisions over records and names.

Two stores rotate: the root (:func:`plan_rotation`, over the records of
``state.json``, after an upload) and the local staging folder
(:func:`plan_local_rotation`, over the committed names, after a local commit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from colabrun.jobs.spec import KeepBest
from colabrun.state.checkpoints import parse_checkpoint_name
from colabrun.state.model import CheckpointRecord


def plan_rotation(
    records: Sequence[CheckpointRecord], *, keep_last: int, newest_verified: str | None,
    keep_best: KeepBest | None = None,
) -> list[str]:
    """Names of checkpoints to rotate out, oldest first.

    Keeps the newest ``keep_last`` records, the best by ``keep_best``, and never the newest
    verified one, whatever ``keep_last`` says: no path may delete the last good checkpoint.

    Args:
        records: committed checkpoints on record.
        keep_last: how many of the newest to keep (at least 1).
        newest_verified: name of the newest checkpoint known to verify, if any.
        keep_best: the metric that names the best checkpoint, if one is kept.

    Returns:
        The names to delete.
    """
    ordered = sorted(records, key=lambda r: (r.step, r.generation, r.created_at))
    doomed = ordered[: max(len(ordered) - max(keep_last, 1), 0)]
    best = best_record(records, keep_best) if keep_best is not None else None
    kept = {newest_verified, best.name if best is not None else None}
    return [r.name for r in doomed if r.name not in kept]


def best_record(records: Iterable[CheckpointRecord], keep_best: KeepBest
                ) -> CheckpointRecord | None:
    """The record whose ``keep_best.metric`` is best (the newest among equals); ``None``
    when no record holds that metric."""
    scored = [r for r in records if keep_best.metric in r.metrics]
    if not scored:
        return None
    sign = 1.0 if keep_best.mode == "max" else -1.0
    return max(scored, key=lambda r: (sign * r.metrics[keep_best.metric], r.step,
                                      r.generation, r.created_at))


def plan_local_rotation(names: Iterable[str], *, keep: int, protected: str | None) -> list[str]:
    """Local checkpoints to delete after a local commit, oldest first.

    Keeps the ``keep`` newest (the one just committed among them) and
    ``protected``, the one being uploaded: deleting it would fail its upload.
    Names that are not checkpoint names are never deleted.

    Args:
        names: the committed local checkpoint names, in any order.
        keep: how many of the newest to keep (at least 1).
        protected: a name never to delete now, if any.

    Returns:
        The names to delete.
    """
    keyed = sorted((key, name) for name in set(names)
                   if (key := parse_checkpoint_name(name)) is not None)
    older = keyed[: max(len(keyed) - max(keep, 1), 0)]
    return [name for _, name in older if name != protected]
