"""Getting results out of a job: its trained state, its metrics, its return value.

Everything here reads the root alone (docs/concepts.md, "Getting results out"), so it works on
any runtime that mounts the same Drive, while the job runs or long after::

    tracked = colabrun.load("digits-cnn", into={"model": model})   # the newest checkpoint
    records = colabrun.metrics("digits-cnn")                      # a DataFrame with pandas
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from colabrun.jobs.errors import CheckpointError, JobNotFound, SpecError
from colabrun.jobs.handle import Stateful
from colabrun.jobs.spec import KeepBest
from colabrun.runner.train.metrics import METRICS_NAME, read_metrics
from colabrun.state.jobdir import JobDir
from colabrun.state.model import CheckpointRecord, JobState
from colabrun.state.rotation import best_record

#: the largest return value kept in ``state.json`` (its JSON, bytes)
MAX_RESULT_BYTES = 64 * 1024


def storable_result(value: Any) -> tuple[Any, str | None]:
    """``value`` as ``state.json`` can keep it, or ``None`` and why not. Pure.

    Kept: what ``json.dumps`` writes without loss (no NaN), at most :data:`MAX_RESULT_BYTES`.
    """
    if value is None:
        return None, None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"it is not JSON ({exc})"
    if len(text.encode()) > MAX_RESULT_BYTES:
        return None, f"its JSON is {len(text.encode())} bytes, over {MAX_RESULT_BYTES}"
    return json.loads(text), None


def job_state(job: JobDir) -> JobState:
    """The job's state.

    Raises:
        JobNotFound: no such job under the root.
        StateCorrupt: ``state.json`` does not parse.
    """
    state = job.statefile.read()
    if state is None:
        raise JobNotFound(f"no job {job.name!r} under {job.root}; `colabrun list --root "
                          f"{job.root}` shows the jobs there")
    return state


def choose_checkpoint(state: JobState, step: int | None, *, best: KeepBest | None = None
                      ) -> list[CheckpointRecord]:
    """The records to try, in order: the one at ``step``, or the best by ``best``, else the
    newest first. Pure.

    Raises:
        CheckpointError: no checkpoint yet, none at ``step``, or none scored by ``best``.
    """
    records = sorted(state.checkpoints, key=lambda r: (r.step, r.generation, r.created_at),
                     reverse=True)
    if not records:
        raise CheckpointError(f"job {state.name!r} has no checkpoint under the root yet; "
                              "train it first (a checkpoint is written at every save)")
    if best is not None:
        found = best_record(records, best)
        if found is None:
            raise CheckpointError(f"job {state.name!r}: no checkpoint holds a value of "
                                  f"{best.metric!r} yet (it is logged with run.step or run.log; "
                                  "a checkpoint keeps the newest value logged before it)")
        return [found]
    if step is None:
        return records
    at = [r for r in records if r.step == step]
    if not at:
        steps = ", ".join(str(r.step) for r in reversed(records))
        raise CheckpointError(f"job {state.name!r} has no checkpoint at step {step}; it has "
                              f"steps {steps} (older ones were rotated out: keep_last)")
    return at


def load_tracked(job: JobDir, *, step: int | None = None, best: bool = False,
                 map_location: str | torch.device = "cpu") -> tuple[CheckpointRecord,
                                                                   dict[str, Any]]:
    """The tracked state dicts of a verified checkpoint: the newest that verifies, the one
    at ``step``, or the best by the spec's ``checkpoint.keep_best``; and its record.

    Raises:
        JobNotFound, StateCorrupt: as :func:`job_state`.
        CheckpointError: no checkpoint (at ``step``, or scored), or none that verifies.
        SpecError: ``best`` asked of a job whose spec keeps no best checkpoint.
    """
    problems = []
    keep_best = kept_best(job) if best else None
    for record in choose_checkpoint(job_state(job), step, best=keep_best):
        try:
            job.store.verify(record.name)
            return record, dict(job.store.load_payload(record.name,
                                                       map_location=map_location)["tracked"])
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError(f"job {job.name!r}: no checkpoint verifies: {'; '.join(problems)}")


def kept_best(job: JobDir) -> KeepBest:
    """The job's ``checkpoint.keep_best``, from the spec kept in its folder.

    Raises:
        SpecError: the job keeps no best checkpoint.
    """
    keep_best = job.read_spec().checkpoint.keep_best
    if keep_best is None:
        raise SpecError(f"job {job.name!r} keeps no best checkpoint: set checkpoint.keep_best "
                        "(e.g. {metric: val_loss, mode: min}) in its spec, then its next "
                        "checkpoints are scored")
    return keep_best


def load_into(objects: Mapping[str, Stateful], tracked: Mapping[str, Any]) -> None:
    """``load_state_dict`` of each object from the state saved under its name.

    Raises:
        KeyError: an object's name was never tracked (the message lists what was).
    """
    missing = sorted(set(objects) - set(tracked))
    if missing:
        raise KeyError(f"{', '.join(map(repr, missing))} not in the checkpoint; it tracks "
                       f"{', '.join(map(repr, sorted(tracked)))} (run.track(name=...))")
    for name, obj in objects.items():
        obj.load_state_dict(tracked[name])


def export_state_dict(tracked: Mapping[str, Any], name: str, out: Path) -> Path:
    """Write one tracked object's state dict with ``torch.save``: loadable anywhere with
    ``torch.load(out, weights_only=True)``.

    Raises:
        KeyError: ``name`` was never tracked.
    """
    if name not in tracked:
        raise KeyError(f"{name!r} not in the checkpoint; it tracks "
                       f"{', '.join(map(repr, sorted(tracked)))}: name one with --object")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tracked[name], out)
    return out


def metric_records(job: JobDir) -> list[dict[str, Any]]:
    """The job's metrics records in step order (redone steps counted once)."""
    job_state(job)  # an unknown job is an error, not an empty list
    return read_metrics(job.path / METRICS_NAME)


def as_frame(records: Sequence[Mapping[str, Any]], *, frame: bool | None) -> Any:
    """``records`` as a pandas DataFrame when asked, or by default when pandas is there."""
    if frame is None:
        frame = importlib.util.find_spec("pandas") is not None
    if not frame:
        return list(records)
    import pandas  # type: ignore[import-untyped]  # optional: not a dependency

    return pandas.DataFrame.from_records(list(records))


def write_metrics_csv(records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """The records as CSV: one row per record, one column per key (first seen first)."""
    first = ("step", "epoch", "session", "time")  # the bookkeeping, then the metrics
    seen = dict.fromkeys(key for record in records for key in record)
    columns = [k for k in first if k in seen] + [k for k in seen if k not in first]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(v) for k, v in record.items()})
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else value
