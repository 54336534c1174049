"""The Python entry points: what a notebook cell calls.

    from colabrun import runner
    result = runner.run("jobs/examples/digits.yaml")        # or a JobSpec
    result = runner.run(JobSpec(name="mnist", entrypoint=train, epochs=5))
    runner.load("mnist", into={"model": model})                  # the trained weights

Re-running the cell continues the job; once complete, it returns at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colabrun.jobs.loading import load_spec, validate_spec
from colabrun.jobs.spec import JobSpec
from colabrun.runner.platform import default_root
from colabrun.state.jobdir import JobDir
from colabrun.state.model import JobState

if TYPE_CHECKING:  # the session imports torch: `colabrun stop` and `status` start without it
    from colabrun.runner.ending import RunResult


def resolve_root(root: str | Path | None, spec: JobSpec | None = None) -> Path:
    """The root, made absolute: the explicit one, else the spec's, else the platform default.

    Absolute because a notebook may ``os.chdir`` while a job runs.
    """
    if root is not None:
        return Path(root).expanduser().absolute()
    if spec is not None and spec.root is not None:
        return Path(spec.root).expanduser().absolute()
    return default_root()


def as_spec(spec: JobSpec | Mapping[str, Any] | str | Path) -> JobSpec:
    """A spec from a :class:`JobSpec`, a dict of its fields, or a spec file's path."""
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, Mapping):
        return validate_spec(spec)
    return load_spec(spec)


def run(
    spec: JobSpec | Mapping[str, Any] | str | Path,
    *,
    root: str | Path | None = None,
    force: bool = False,
    **options: Any,
) -> RunResult:
    """Start or continue a job, in the foreground, until it is done.

    Args:
        spec: a :class:`JobSpec`, a dict of its fields, or the path of a spec file.
        root: the folder holding all jobs (default: the spec's, else the platform's).
        force: continue even if params or seed changed since the job was created.
        **options: passed to :func:`colabrun.runner.session.run_job` (``clock``, ``storage``...).

    Returns:
        The :class:`RunResult`; ``result.exit_code`` is what the CLI would exit with.
    """
    from colabrun.runner.session import run_job

    job_spec = as_spec(spec)
    return run_job(job_spec, root=resolve_root(root, job_spec), force=force,
                   search_path=[Path.cwd()], **options)


def resume(name: str, *, root: str | Path | None = None, **options: Any) -> RunResult:
    """Continue job ``name`` from what its folder under ``root`` holds."""
    from colabrun.runner.session import resume_job

    return resume_job(name, root=resolve_root(root), search_path=[Path.cwd()], **options)


def load(name: str, *, root: str | Path | None = None, step: int | None = None,
         best: bool = False, into: Mapping[str, Any] | None = None,
         map_location: str = "cpu") -> dict[str, Any]:
    """The trained state of job ``name``, from its newest checkpoint that verifies (or the
    one at ``step``, or the best), read from the root alone.

    Args:
        name: the job.
        root: the folder holding the jobs (default: the platform's).
        step: a checkpoint's step instead of the newest (``colabrun status NAME`` lists them).
        best: the best checkpoint by the spec's ``checkpoint.keep_best`` instead.
        into: objects to load it into, by the names the job tracked them under:
            ``into={"model": model}`` calls ``model.load_state_dict(...)``.
        map_location: where the tensors go (``"cuda"`` to load straight onto the GPU).

    Returns:
        ``{name: state_dict}`` of every tracked object (``run.track(model=...)``).

    Raises:
        JobNotFound: no such job. CheckpointError: no checkpoint (at ``step``) that verifies.
        SpecError: ``best`` for a job whose spec sets no ``checkpoint.keep_best``.
        KeyError: an object of ``into`` was never tracked.
    """
    from colabrun.runner.results import load_into, load_tracked

    _, tracked = load_tracked(JobDir(resolve_root(root), name), step=step, best=best,
                              map_location=map_location)
    if into is not None:
        load_into(into, tracked)
    return tracked


def metrics(name: str, *, root: str | Path | None = None, frame: bool | None = None) -> Any:
    """Job ``name``'s metrics, every session's, in step order (redone steps counted once).

    Returns:
        A pandas DataFrame when pandas is installed (or ``frame=True``), else a list of
        dicts (``frame=False``): one per ``run.step(...)`` / ``run.log(...)`` record.
    """
    from colabrun.runner.results import as_frame, metric_records

    return as_frame(metric_records(JobDir(resolve_root(root), name)), frame=frame)


def status(name: str, *, root: str | Path | None = None) -> JobState:
    """Job ``name``'s state (``state.json``): status, progress, sessions, checkpoints."""
    from colabrun.runner.results import job_state

    return job_state(JobDir(resolve_root(root), name))
