"""Resolving a spec's entrypoint (``package.module:function``) to the function."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jobs.errors import EntrypointError


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
