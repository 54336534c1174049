"""``python -m colabrun``: the ``colabrun`` command, for a shell without the script on PATH."""

from colabrun.runner.commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
