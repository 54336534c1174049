"""The ``colabrun`` command's parser: every subcommand, its arguments, and an example each
(docs/cli.md)."""

from __future__ import annotations

import argparse
from typing import Protocol


def version() -> str:
    """The installed colabrun's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("colabrun")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


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
    p = add("list", "list the jobs under the root")
    p.add_argument("--json", action="store_true",
                   help="print [{name, status}] as JSON (status 'unreadable: ...' for a bad state)")
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
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (verdict, each kill, the first difference)")


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
