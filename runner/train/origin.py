"""Whose code an exception came from: the user's training function, or colabrun's own.

A session reports "the training function raised" only when it did. An ``OSError`` raised
while colabrun sets the session up (a folder it cannot write), or inside the handle's own
code, is colabrun's, and says so (docs/troubleshooting.md, "Training errors").
"""

from __future__ import annotations

import sysconfig
import traceback
from collections.abc import Sequence
from pathlib import Path

import colabrun

#: colabrun's package, and the folders its layers link to
_PACKAGE = Path(colabrun.__file__).resolve().parent
COLABRUN_DIRS = (_PACKAGE, *(p.resolve() for p in _PACKAGE.iterdir() if p.is_symlink()))
#: colabrun's built-in example jobs: training functions, as a user's are
EXAMPLES = (_PACKAGE / "jobs" / "examples").resolve()
#: where the interpreter's own and installed libraries live (torch, numpy, the stdlib)
LIBRARY_DIRS = tuple(Path(sysconfig.get_paths()[key]).resolve()
                     for key in ("stdlib", "platstdlib", "purelib", "platlib"))


def kind_of(filename: str) -> str:
    """``"colabrun"``, ``"library"`` or ``"user"``: who wrote the file of a frame."""
    if filename.startswith("<") and not filename.startswith("<ipython"):
        return "library"  # <frozen importlib._bootstrap>, <string>: no one's own code
    path = Path(filename).resolve()
    if path.is_relative_to(EXAMPLES):
        return "user"
    if any(path.is_relative_to(d) for d in COLABRUN_DIRS):
        return "colabrun"
    if any(path.is_relative_to(d) for d in LIBRARY_DIRS):
        return "library"
    return "user"


def origin(frames: Sequence[tuple[str, str]], *, entry: str) -> int | None:
    """Which frame of colabrun's an exception came from, or ``None`` for the user's code.

    Args:
        frames: ``(filename, function)`` of each frame, outermost first (a traceback's).
        entry: the function of colabrun that calls the user's (``"_call"``): an exception
            that never passed through it came from colabrun's setup.

    Returns:
        The index of colabrun's innermost frame, when it is also the innermost frame that
        is no library's (torch called from the user's code is the user's error).
    """
    kinds = [kind_of(filename) for filename, _ in frames]
    called = next((i for i, (_, name) in enumerate(frames)
                   if name == entry and kinds[i] == "colabrun"), None)
    if called is None:
        return next((i for i in reversed(range(len(frames))) if kinds[i] == "colabrun"), None)
    own = [i for i in range(called + 1, len(frames)) if kinds[i] != "library"]
    return own[-1] if own and kinds[own[-1]] == "colabrun" else None


def origin_of(exc: BaseException, *, entry: str = "_call") -> traceback.FrameSummary | None:
    """The frame of colabrun's that raised ``exc`` (see :func:`origin`), or ``None``."""
    summary = traceback.extract_tb(exc.__traceback__)
    index = origin([(f.filename, f.name) for f in summary], entry=entry)
    return None if index is None else summary[index]
