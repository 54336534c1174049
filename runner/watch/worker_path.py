"""The worker's ``sys.path``: the supervisor's, with the working folder last while colabrun
and torch import. Pure (but for ``realpath``).

The supervisor imported torch, numpy, yaml... before the working folder was put in front
of its ``sys.path`` (the ``colabrun`` command starts without it; the entrypoint's search
path adds it), or, in a notebook, before the user wrote a ``numpy.py`` there. A worker
started with the supervisor's path as it is now would import a ``numpy.py`` or ``yaml.py``
lying in the working folder instead, and die before it could say why, where the
supervisor runs fine (issue 18). So the worker imports with the working folder last
(:func:`startup_path`), then takes the supervisor's order back for the user's code
(:func:`training_path`): the user's modules come from the working folder first, as in the
supervisor, and the packages both processes loaded at start are the same files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def startup_path(path: Sequence[str], *, cwd: str, home: str) -> list[str]:
    """The path the worker imports colabrun and torch with.

    Args:
        path: the supervisor's ``sys.path``.
        cwd: the working folder (the worker's too).
        home: the folder colabrun itself was imported from: it keeps its place, so a
            worker of a colabrun checkout runs that checkout's code, not an installed one.

    Returns:
        ``path`` with its working-folder entries (``''``, ``.``, ``cwd``) moved last.
    """
    here, kept = os.path.realpath(cwd), os.path.realpath(home)

    def is_working_folder(entry: str) -> bool:
        real = os.path.realpath(os.path.join(cwd, entry))  # '' and '.' are the cwd
        return real == here and real != kept

    return ([entry for entry in path if not is_working_folder(entry)]
            + [entry for entry in path if is_working_folder(entry)])


def training_path(supervisor: Sequence[str], current: Sequence[str]) -> list[str]:
    """The path the worker loads the user's code with, once colabrun is imported.

    Args:
        supervisor: the supervisor's ``sys.path``.
        current: the worker's, as its start left it.

    Returns:
        The supervisor's entries in its order, then those only the worker has.
    """
    return [*supervisor, *(entry for entry in current if entry not in supervisor)]
