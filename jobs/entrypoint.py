"""Resolving a spec's entrypoint (``package.module:function``) to the function."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from colabrun.jobs.errors import EntrypointError

#: colabrun's own packages, which before 0.2 installed as top-level names: a job created
#: then names its entrypoint ``jobs.examples.digits:train`` in its ``spec.json`` and
#: ``state.json`` on Drive (docs/contributing.md, "One namespace").
PRE_NAMESPACE_PACKAGES = ("jobs", "runner", "state")


def current_entrypoint(entrypoint: str) -> str:
    """The name colabrun uses today for an entrypoint written under a pre-0.2 name.

    Args:
        entrypoint: ``'package.module:function'``.

    Returns:
        ``'colabrun.jobs.examples.digits:train'`` for ``'jobs.examples.digits:train'``
        (only when colabrun has that module); any other entrypoint unchanged, so a
        user's own ``jobs`` package keeps its name.
    """
    module, colon, attr = entrypoint.partition(":")
    if module.split(".")[0] not in PRE_NAMESPACE_PACKAGES:
        return entrypoint
    moved = f"colabrun.{module}"
    try:
        exists = importlib.util.find_spec(moved) is not None
    except (ImportError, ValueError):
        exists = False
    return f"{moved}{colon}{attr}" if exists else entrypoint


def resolve_entrypoint(
    entrypoint: str | Callable[..., Any], *, search_path: Iterable[Path] = ()
) -> Callable[..., Any]:
    """Import the training function a spec names.

    Args:
        entrypoint: ``'package.module:function'`` (attribute paths allowed after
            the colon), or a callable, returned as is.
        search_path: folders put in front of ``sys.path`` first, e.g. the
            current directory, so a ``train.py`` beside the spec imports.

    Returns:
        The callable.

    Raises:
        EntrypointError: the module does not import, lacks the attribute, or it
            is not callable.
    """
    if not isinstance(entrypoint, str):
        if not callable(entrypoint):
            raise EntrypointError(f"entrypoint {entrypoint!r} is not callable")
        return entrypoint
    for folder in reversed(list(search_path)):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    module_name, _, attr_path = entrypoint.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise EntrypointError(
            f"entrypoint {entrypoint!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc}); check the spelling, and that the module is "
            "installed or in the current directory"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise EntrypointError(
                f"entrypoint {entrypoint!r}: {module_name!r} has no attribute {part!r}; "
                "check the name after the ':'"
            )
        target = getattr(target, part)
    if not callable(target):
        raise EntrypointError(
            f"entrypoint {entrypoint!r} is a {type(target).__name__}, not a function; "
            "point it at a function taking the run handle"
        )
    return target  # type: ignore[no-any-return]
