"""Resolving a spec's entrypoint (``package.module:function``) to the function, and
checking that it takes the run handle, before anything is written: a module that does not
import and a ``def train():`` are both refused with a message that says how to fix them
(docs/troubleshooting.md, "Entrypoint errors").
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from colabrun.jobs.errors import EntrypointError
from colabrun.jobs.imports import import_hint, working_folders

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
    """Import the training function a spec names, and check it takes the run handle.

    Args:
        entrypoint: ``'package.module:function'`` (attribute paths allowed after
            the colon), or a callable, checked and returned as is.
        search_path: folders put in front of ``sys.path`` first, e.g. the
            current directory, so a ``train.py`` beside the spec imports.

    Returns:
        The callable.

    Raises:
        EntrypointError: the module does not import, lacks the attribute, it is not
            callable, or it cannot be called with one argument (:func:`check_signature`).
    """
    if not isinstance(entrypoint, str):
        if not callable(entrypoint):
            raise EntrypointError(f"entrypoint {entrypoint!r} is not callable")
        check_signature(entrypoint, entrypoint=_ref(entrypoint))
        return entrypoint
    folders = list(search_path)
    for folder in reversed(folders):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    module_name, _, attr_path = entrypoint.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise EntrypointError(_does_not_import(entrypoint, module_name, exc, folders)) from exc
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
    check_signature(target, entrypoint=entrypoint)
    return target  # type: ignore[no-any-return]


def check_signature(train: Callable[..., Any], *, entrypoint: str) -> None:
    """Refuse a training function that cannot be called as ``train(run)``.

    colabrun calls it with one positional argument, the run handle; a ``def train():``
    would fail only once the job's folder and lease exist.

    Args:
        train: the training function.
        entrypoint: how the spec names it, for the message.

    Raises:
        EntrypointError: one argument cannot be bound to its signature. A callable whose
            signature Python cannot read (a builtin) passes.
    """
    try:
        signature = inspect.signature(train)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None)
    except TypeError as exc:
        name = getattr(train, "__name__", "train")
        shown = signature.replace(return_annotation=inspect.Signature.empty)
        raise EntrypointError(
            f"entrypoint {entrypoint!r} is `{name}{shown}`, which cannot be called with "
            f"the run handle as its one argument ({exc}); define it as `def {name}(run):` "
            "(any other parameter needs a default)"
        ) from None


def _does_not_import(entrypoint: str, module_name: str, exc: Exception,
                     search_path: Sequence[Path]) -> str:
    """The message for an entrypoint module that raised ``exc`` when imported."""
    seen = (f"entrypoint {entrypoint!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc})")
    if _is_itself_missing(module_name, exc):
        where = ", ".join(str(folder) for folder in search_path) or str(Path.cwd())
        return (f"{seen}; check the spelling, and that the module is installed or in the "
                f"current directory ({where})")
    hint = import_hint(exc, folders=working_folders(search_path))
    if hint:
        return f"{seen}; {hint}"
    if isinstance(exc, ImportError):
        return f"{seen}; fix the import"
    return (f"{seen}; the module raised while it was imported: fix it (`python -c 'import "
            f"{module_name}'` shows the traceback)")


def _is_itself_missing(module_name: str, exc: Exception) -> bool:
    """Whether the entrypoint's module (or its package) is what Python did not find, rather
    than something it imports."""
    name = exc.name if isinstance(exc, ModuleNotFoundError) else None
    return name is not None and (module_name == name or module_name.startswith(f"{name}."))


def _ref(train: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable, as :attr:`JobSpec.entrypoint_ref` names it."""
    module = getattr(train, "__module__", "?")
    return f"{module}:{getattr(train, '__qualname__', repr(train))}"
