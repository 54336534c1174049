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
from typing import Protocol

from colabrun.jobs.errors import CheckpointError, ColabrunError, JobNotFound, StateCorrupt
from colabrun.jobs.loading import load_spec
from colabrun.jobs.reference import spec_reference_markdown
from colabrun.jobs.spec import JobSpec
from colabrun.runner.api import resolve_root, resume, run
from colabrun.runner.commands.logs import follow, log_path, print_log
from colabrun.runner.commands.plots import plot_job
from colabrun.runner.commands.report import read_states, status_detail, status_table
from colabrun.runner.watch.control import request
from colabrun.state.jobdir import JobDir
from colabrun.state.model import Status
from colabrun.state.storage import Storage

TAKEOVER_HELP = ("take the job over although its lease looks live (only when you know the "
                 "runtime holding it is gone)")
ROOT_HELP = ("folder holding the jobs (default: Drive's MyDrive/colabrun on Colab, else "
             "./colabrun-runs)")
SPEC_ROOT_HELP = ("folder holding the jobs (default: the spec's root, else Drive's "
                  "MyDrive/colabrun on Colab, else ./colabrun-runs)")
NO_PROGRESS_HELP = "no progress bars: one plain line per epoch (the default off a terminal)"



class AddCommand(Protocol):
    """Adds one subcommand (with ``--root`` unless ``root=False``) and returns its parser."""

    def __call__(self, name: str, help_text: str, *, root: bool = True,
                 root_help: str = ROOT_HELP) -> argparse.ArgumentParser: ...


NAME_HELP = "the job's name (`colabrun list` shows them)"
SPEC_HELP = "spec file (.yaml, .yml, .toml, .json or .py)"

#: one example per command, shown at the end of its --help
EXAMPLES = {
    "run": "colabrun run jobs/examples/digits.yaml",
    "resume": "colabrun resume digits-cnn --root /content/drive/MyDrive/colabrun",
    "validate": "colabrun validate my_job.yaml",
    "schema": "colabrun schema --markdown > spec.md",
    "status": "colabrun status digits-cnn --verify",
    "list": "colabrun list --root runs",
    "repair": "colabrun repair digits-cnn",
    "chaos": "colabrun chaos my_job.yaml --kills 5 --epochs 2",
    "stop": "colabrun stop digits-cnn",
    "checkpoint": "colabrun checkpoint digits-cnn",
    "plot": "colabrun plot digits-cnn --metric loss,test_accuracy --out curves.png",
    "export": "colabrun export digits-cnn --out model.pt --metrics metrics.csv",
    "clean": "colabrun clean digits-cnn --yes",
    "logs": "colabrun logs digits-cnn --follow",
    "doctor": "colabrun doctor --json",
}


class UsageError(ColabrunError, ValueError):
    """A command line that names no valid command or misses a needed argument."""

    exit_code = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (docs/cli.md).

    Returns:
        The parser; ``args.command`` names the subcommand parsed.
    """
    parser = argparse.ArgumentParser(
        prog="colabrun", description="Resilient PyTorch training on runtimes that die.")
    parser.add_argument("--version", action="version", version=f"colabrun {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, *, root: bool = True,
            root_help: str = ROOT_HELP) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text,
                                 epilog=f"example:\n  {EXAMPLES[name]}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if root:
            command.add_argument("--root", help=root_help)
        return command

    _add_training_commands(add)
    _add_spec_commands(add)
    _add_state_commands(add)
    _add_chaos_command(add)
    _add_request_commands(add)
    _add_report_commands(add)
    return parser


def _add_training_commands(add: AddCommand) -> None:
    """``run`` and ``resume``."""
    p = add("run", "start or continue the job a spec file declares", root_help=SPEC_ROOT_HELP)
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--force", action="store_true",
                   help="continue even if the entrypoint, params or seed changed since the job "
                   "was created")
    p.add_argument("--takeover", action="store_true", help=TAKEOVER_HELP)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p = add("resume", "continue a job from its folder under the root alone")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--takeover", action="store_true", help=TAKEOVER_HELP)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def _add_spec_commands(add: AddCommand) -> None:
    """``validate`` and ``schema``: about spec files, not jobs."""
    p = add("validate", "check a spec file and print it normalised", root=False)
    p.add_argument("spec", help=SPEC_HELP)
    p = add("schema", "print the JSON Schema of spec files", root=False)
    p.add_argument("--markdown", action="store_true", help="print the spec reference instead")


def _add_state_commands(add: AddCommand) -> None:
    """``status``, ``list`` and ``repair``: the jobs' state files."""
    p = add("status", "show all jobs, or one job in detail")
    p.add_argument("name", nargs="?", help="one job, in detail (default: a table of all jobs)")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check every checkpoint's sha256 (reads them all), not just its size")
    add("list", "list the jobs under the root")
    p = add("repair", "rebuild a corrupt state.json from the committed checkpoints")
    p.add_argument("name", help=NAME_HELP)


def _add_chaos_command(add: AddCommand) -> None:
    """``chaos``: kill a spec's job at random points and compare with a clean run."""
    p = add("chaos", "prove a job resumes exactly: kill it N times at random points, compare",
            root=False)
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs to deliver (default 5)")
    p.add_argument("--seed", type=int, default=0, help="chooses the kill points (default 0)")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of the spec's")
    p.add_argument("--scratch", help="folder for the runs (default: a new temporary folder)")


def _add_request_commands(add: AddCommand) -> None:
    """``stop`` and ``checkpoint``: request files for a running job."""
    p = add("stop", "ask a running job to save and stop (a request file in its control/ folder)")
    p.add_argument("name", help=NAME_HELP)
    p = add("checkpoint", "ask a running job to save now and go on")
    p.add_argument("name", help=NAME_HELP)


def _add_report_commands(add: AddCommand) -> None:
    """``plot``, ``logs`` and ``doctor``: what a job logged, and this runtime's health."""
    p = add("plot", "draw the job's metrics against step, across all its sessions, as a PNG")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--out", help="the PNG to write (default: <job>/reports/metrics.png)")
    p.add_argument("--metric", action="extend", type=lambda text: text.split(","),
                   metavar="M[,M...]", help="plot only these metrics (default: all); repeat "
                   "it or separate names with commas")
    p = add("export", "write a job's trained model (a state_dict torch.load(weights_only=True) "
            "reads) and/or its metrics as CSV")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--out", metavar="FILE.pt", help="write the model's state_dict here")
    p.add_argument("--object", default="model",
                   help="which tracked object to write (default: model; run.track(name=...))")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", type=int,
                       help="the checkpoint at this step (default: the newest)")
    which.add_argument("--best", action="store_true",
                       help="the best checkpoint by the spec's checkpoint.keep_best")
    p.add_argument("--metrics", metavar="FILE.csv", help="write every metrics record here")
    p = add("clean", "delete a job for good: its checkpoints (truncated first, as Drive needs), "
            "state, metrics and log, and this runtime's staging folder")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask first")
    p = add("logs", "print the job's log")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing lines as they are appended, until the job ends (a pending "
                   "job is waited for) or Ctrl-C")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="with --follow: stop after S seconds")
    p = add("doctor", "check this runtime: GPU, RAM, disk, Drive, the jobs' root, versions, "
            "time left")
    p.add_argument("--json", action="store_true", help="print the facts and checks as JSON")


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


def version() -> str:
    """The installed colabrun's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("colabrun")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


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
    print(f"chaos: job {spec.name!r}, {args.kills} kills (seed {args.seed}), on the CPU, "
          f"in {scratch}")
    report = run_chaos(spec, kills=args.kills, seed=args.seed, epochs=args.epochs,
                       scratch=scratch)
    print(report.render())
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
    from colabrun.runner.commands.doctor import gather_facts, render, report_json, run_checks

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
