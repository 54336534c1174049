"""Which host folders a simulated runtime sees: the shared ones, checked, and those bound
back into its fresh ``/tmp``. Pure over paths, except :func:`python_folders` (which asks
this Python where it imports from) and the existence checks of :func:`requested_folders`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

#: The runtime's local disk: replaced by a fresh tmpfs in each runtime.
TMP = Path("/tmp")


def holds_tmp(path: Path) -> bool:
    """Whether ``path`` is ``/tmp`` or a folder holding it: sharing it would keep the
    host's ``/tmp``."""
    return TMP.is_relative_to(path)


def requested_folders(shared: Sequence[Path]) -> list[Path]:
    """The folders a runtime was asked to share, resolved and checked.

    Args:
        shared: host folders, relative ones taken from this process's working folder.

    Returns:
        each of them, resolved.

    Raises:
        ValueError: one is ``/tmp`` or holds it, or is an existing file.
    """
    requested = [Path(p).resolve() for p in shared]
    for path in requested:
        if holds_tmp(path):
            raise ValueError(f"cannot share {path}: the runtime would keep the host's "
                             "/tmp; share the folders under it that it needs")
        if path.exists() and not path.is_dir():
            raise ValueError(f"cannot share {path}: only folders can be shared")
    return requested


def visible_folders(requested: Sequence[Path], automatic: Sequence[Path]) -> tuple[Path, ...]:
    """Every host folder a runtime shares: the ``requested`` ones (checked already), and the
    ``automatic`` ones except ``/tmp`` and those holding it; none inside another, sorted."""
    kept = [p for p in automatic if not holds_tmp(p)]
    return tuple(outermost([*requested, *kept]))


def binds(shared: Sequence[Path]) -> list[str]:
    """The shared folders under ``/tmp``, relative to it: those the setup binds back in."""
    return [str(p.relative_to(TMP)) for p in shared if p.is_relative_to(TMP)]


def outermost(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without duplicates and without those inside another one, sorted."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return sorted(kept)


def python_folders() -> list[Path]:
    """The folders this Python imports from that lie under ``/tmp``: a clone installed in
    editable mode there (CI's fresh clone), a virtual environment there. A real runtime has
    its packages outside its local disk's scratch space; without these, the fresh ``/tmp``
    would hide colabrun itself from the command."""
    import colabrun

    package = Path(colabrun.__file__).resolve().parent
    candidates = [package.parent, *(p.resolve() for p in package.iterdir() if p.is_symlink()),
                  Path(sys.prefix).resolve(), *(Path(entry).resolve() for entry in sys.path
                                                if entry and Path(entry).is_dir())]
    return [p for p in candidates if p.is_relative_to(TMP) and p != TMP]
