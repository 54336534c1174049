"""The ``colabrun`` command. Exit codes (docs/cli.md):

0 completed (or already complete) · 1 the job failed · 2 bad input (spec,
entrypoint, unknown job) · 3 stopped before the end, run again to continue ·
4 another runner holds the job (or took it over) · 5 storage or state problem ·
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from colabrun.jobs.errors import CheckpointError, ColabrunError, JobNotFound, StateCorrupt
from colabrun.jobs.loading import load_spec
from colabrun.jobs.reference import spec_reference_markdown
from colabrun.jobs.spec import JobSpec
from colabrun.runner.api import resolve_root, resume, run
from colabrun.runner.commands.logs import follow, log_path, print_log
from colabrun.runner.commands.parser import build_parser
from colabrun.runner.commands.plots import plot_job
from colabrun.runner.commands.report import read_states, status_detail, status_table
from colabrun.runner.watch.control import request
from colabrun.state.jobdir import JobDir
from colabrun.state.model import Status
from colabrun.state.storage import Storage


class UsageError(ColabrunError, ValueError):
    """A command line that names no valid command or misses a needed argument."""

    exit_code = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    unknown = _unknown_command(argv)
    if unknown is not None:
        print(f"colabrun: error: {unknown}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `colabrun`
        parser.print_help()
        return 0
    try:
        return int(COMMANDS[args.command](args))
    except BrokenPipeError:  # `colabrun schema | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except ColabrunError as exc:
        for line in str(exc).splitlines():
            print(f"colabrun: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("colabrun: interrupted", file=sys.stderr)
        return 130


def _unknown_command(argv: Sequence[str]) -> str | None:
    """What to say of a first word that names no command, with the nearest ones."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None or first in COMMANDS or argv.index(first) != 0:
        return None
    near = difflib.get_close_matches(first, COMMANDS, n=2)
    hint = (f"did you mean {' or '.join(repr(n) for n in near)}?" if near
            else "`colabrun --help` lists the commands")
    return f"unknown command {first!r}; {hint}"


def _run(args: argparse.Namespace) -> int:
    spec = Path(args.spec)
    if not spec.suffix and not spec.exists():  # `colabrun run NAME`: a job, not a spec
        raise UsageError(f"{args.spec!r} is not a spec file (.yaml, .toml, .json or .py); to "
                         f"continue the job of that name, run `colabrun resume {args.spec}`")
    return run(args.spec, root=args.root, force=args.force, takeover=args.takeover,
               progress=False if args.no_progress else None).exit_code


def _resume(args: argparse.Namespace) -> int:
    return resume(args.name, root=args.root, takeover=args.takeover,
                  progress=False if args.no_progress else None).exit_code


def _validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    print(json.dumps(spec.to_json_dict(), indent=2))
    return 0


def _schema(args: argparse.Namespace) -> int:
    if args.markdown:
        print(spec_reference_markdown(), end="")
        return 0
    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    storage = Storage()
    if args.verify and args.name is None:
        raise UsageError("--verify checks one job's checkpoints (it reads them all): name the "
                         "job, `colabrun status NAME --verify`")
    if args.name is None:
        jobs = read_states(root, storage)
        if args.json:
            print(json.dumps([s.model_dump(mode="json") for _, s in jobs if not isinstance(s, str)],
                             indent=2))
        else:
            print(status_table(jobs, now=time.time()) if jobs else f"no jobs under {root}")
        return 0
    job = JobDir(root, args.name, storage=storage)
    state = job.statefile.read()
    if state is None:
        raise _not_found(args.name, root)
    if args.json:
        print(state.model_dump_json(indent=2))
        return 0
    try:
        description = job.read_spec().description
    except ColabrunError:
        description = ""
    def check(name: str) -> str:
        if not args.verify:
            return job.store.check_size(name)
        try:
            job.store.verify(name)
        except CheckpointError as exc:
            return f"BAD: {str(exc).split(': ', 1)[-1]}"
        return "verified"

    print(status_detail(state, job_dir=job.path, now=time.time(), description=description,
                        check=check))
    return 0


def _list(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    jobs = read_states(root, Storage())
    if args.json:
        print(json.dumps([{"name": name, "status": state if isinstance(state, str)
                           else state.status.value} for name, state in jobs], indent=2))
        return 0
    for name, state in jobs:
        print(f"{name}\t{state if isinstance(state, str) else state.status.value}")
    if not jobs:
        print(f"no jobs under {root}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    root = resolve_root(args.root)
    job = JobDir(root, args.name)
    try:
        if job.statefile.read() is not None:
            print(f"{job.statefile.path} is valid; nothing to repair")
            return 0
    except StateCorrupt:
        pass
    spec = job.read_spec()
    state, problems = job.rebuild_state(spec, now=time.time())
    aside = job.statefile.quarantine()
    job.statefile.write(state)
    for problem in problems:
        print(f"colabrun: skipped {problem}")
    kept = f"; the corrupt file is kept as {aside}" if aside else ""
    print(f"rebuilt {job.statefile.path} from {len(state.checkpoints)} committed "
          f"checkpoints{kept}; continue with `colabrun resume {args.name} --root {root}`")
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from colabrun.runner.commands.chaos import (
        run_chaos,  # chaos and doctor import torch; the rest need not
    )

    spec = load_spec(args.spec)
    scratch = (Path(args.scratch) if args.scratch
               else Path(tempfile.mkdtemp(prefix="colabrun-chaos-")))
    if not args.json:
        ranks = spec.distributed.ranks
        how = (f", its {ranks} ranks as virtual ranks in one process (the same bits as "
               "one process each: docs/concepts.md#several-processes)" if ranks > 1 else "")
        print(f"chaos: job {spec.name!r}, {args.kills} kills (seed {args.seed}), on the CPU"
              f"{how}, in {scratch}")
    report = run_chaos(spec, kills=args.kills, seed=args.seed, epochs=args.epochs,
                       scratch=scratch, out=sys.stderr if args.json else None)
    print(json.dumps({"scratch": str(scratch), **report.as_json()}, indent=2) if args.json
          else report.render())
    return 0 if report.exact else 1


def _not_found(name: str, root: Path) -> JobNotFound:
    try:
        names = [p.name for p in root.iterdir() if p.is_dir()]
    except OSError:
        names = []
    near = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return JobNotFound(f"no job {name!r} under {root}; {hint}`colabrun list --root {root}` "
                       "shows the jobs there")


def _existing_job(args: argparse.Namespace) -> JobDir:
    """The job ``args.name`` under ``args.root``, or a one-line :class:`JobNotFound`."""
    root = resolve_root(args.root)
    job = JobDir(root, args.name)
    if not job.exists():
        raise _not_found(args.name, root)
    return job


def _request(args: argparse.Namespace) -> int:
    job = _existing_job(args)
    path = request(job.path, args.command, job.storage)
    print(f"asked job {args.name!r} to {'save and stop' if args.command == 'stop' else 'save now'}"
          f" ({path}); a running job acts on it within a few seconds")
    return 0


def _plot(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: the plot is a PNG image; name the file "
                         f"{Path(args.out).with_suffix('.png').name}")
    path = plot_job(args.name, root=args.root, out=args.out, metrics=args.metric)
    print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if not args.out and not args.metrics:
        raise UsageError("export writes --out FILE.pt (the model) and/or --metrics FILE.csv; "
                         f"e.g. `colabrun export {args.name} --out model.pt`")
    from colabrun.runner.results import (  # torch: only export needs it
        export_state_dict,
        load_tracked,
        metric_records,
        write_metrics_csv,
    )

    job = _existing_job(args)
    if args.out:
        record, tracked = load_tracked(job, step=args.step, best=args.best)
        try:
            out = export_state_dict(tracked, args.object, Path(args.out))
        except KeyError as exc:
            raise UsageError(f"job {args.name!r}: {exc.args[0]}") from exc
        print(f"wrote {out}: {args.object!r} of {record.name} (epoch {record.epoch}, step "
              f"{record.step}); load it with torch.load({str(out)!r}, weights_only=True)")
    if args.metrics:
        records = metric_records(job)
        out = write_metrics_csv(records, Path(args.metrics))
        print(f"wrote {out}: {len(records)} metrics records")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from colabrun.runner.commands.clean import NotConfirmed, clean, plan_clean

    plan = plan_clean(_existing_job(args))
    if not args.yes:
        if not sys.stdin.isatty():
            raise NotConfirmed(f"{plan.describe()}: not asked (no terminal to answer); "
                               f"pass --yes to delete it")
        answer = input(f"{plan.describe()}? This cannot be undone [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    clean(plan, say=print)
    return 0


def _logs(args: argparse.Namespace) -> int:
    job = _existing_job(args)
    path = log_path(job.path)

    def write(line: str) -> None:
        print(line, flush=True)

    if args.follow:
        follow(path, write=write, storage=job.storage, timeout_s=args.timeout,
               stop=_ended(job))
    elif print_log(path, write=write, storage=job.storage) == 0:
        print(f"colabrun: job {args.name!r} has no log lines yet ({path})", file=sys.stderr)
    return 0


def _ended(job: JobDir) -> Callable[[], bool]:
    """Whether the followed job has ended: it ran during the follow and runs no more, or it
    had ended (completed, stopped, failed) before; a pending job is waited for."""
    seen_running = False

    def ended() -> bool:
        nonlocal seen_running
        try:
            state = job.statefile.read()
        except ColabrunError:  # a state mid-write, or corrupt: look again later
            return False
        status = state.status if state is not None else Status.PENDING
        if status is Status.RUNNING:
            seen_running = True
            return False
        return seen_running or status is not Status.PENDING

    return ended


def _doctor(args: argparse.Namespace) -> int:
    from colabrun.runner.commands.doctor import render, report_json, run_checks
    from colabrun.runner.commands.doctor_facts import gather_facts

    facts = gather_facts(root=resolve_root(args.root))
    checks = run_checks(facts)
    print(json.dumps(report_json(facts, checks), indent=2) if args.json else render(checks))
    return 0


COMMANDS = {
    "run": _run, "resume": _resume, "validate": _validate, "schema": _schema,
    "status": _status, "list": _list, "repair": _repair, "stop": _request, "chaos": _chaos,
    "checkpoint": _request, "plot": _plot, "export": _export, "clean": _clean, "logs": _logs,
    "doctor": _doctor,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
