"""The worker's task, cloudpickled so that its tracebacks keep their file names and lines.

A training function defined in a notebook cell or a script crosses to the worker by value,
its code objects included. cloudpickle (3.1) writes each code object's file name as
``"<dynamic-code>"``, so a traceback in the worker would read ``File "<dynamic-code>",
line 3`` with no source line. :func:`dumps_task` keeps the name: its pickler reduces a
code object as cloudpickle does, then puts the name back when it is loaded
(:func:`_with_source`). A file that exists only in :mod:`linecache` (IPython registers each
cell as ``<ipython-input-7-...>`` or ``/tmp/ipykernel_.../...py``) travels with the task,
and the worker registers its lines, so its tracebacks print the cell's source
(docs/concepts.md#supervisor-and-worker).

Should cloudpickle change how it reduces code, the task is pickled by plain cloudpickle:
tracebacks lose their names again, nothing else breaks.
"""

from __future__ import annotations

import io
import linecache
import os
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

#: cloudpickle's reducer for code objects, if it still has one to wrap
CLOUDPICKLE_CODE_REDUCE: Callable[[types.CodeType], Any] | None = getattr(
    getattr(cloudpickle, "Pickler", None), "dispatch_table", {}).get(types.CodeType)


def dumps_task(task: object, *, code_reduce: Callable[[types.CodeType], Any] | None
               = CLOUDPICKLE_CODE_REDUCE) -> bytes:
    """``task`` cloudpickled, with the file names and cell sources of its code.

    Args:
        task: what the worker is sent.
        code_reduce: cloudpickle's reducer for code objects (``None``: there is none; a
            plain ``cloudpickle.dumps`` then).

    Returns:
        Bytes that ``cloudpickle.loads`` (or ``pickle.loads``) turns back into the task.

    Raises:
        Exception: whatever plain ``cloudpickle.dumps`` raises for the task.
    """
    if code_reduce is not None:
        buffer = io.BytesIO()
        try:
            _TaskPickler(buffer, code_reduce).dump(task)
            return buffer.getvalue()
        except Exception:  # cloudpickle's internals changed: pickle as it would
            pass
    return cloudpickle.dumps(task)  # type: ignore[no-any-return]


def cell_lines(filename: str) -> list[str] | None:
    """The source lines of a file that exists only in :mod:`linecache` (a notebook cell).

    Args:
        filename: a code object's ``co_filename``.

    Returns:
        The lines, or ``None`` for a file on disk (the worker reads it there) or one
        linecache does not hold.
    """
    if os.path.exists(filename):
        return None
    entry = linecache.cache.get(filename)
    if entry is None or len(entry) != 4:  # a lazy entry (1-tuple) reads a module's loader
        return None
    return entry[2]  # the same list for each code of a cell: pickled once, by reference


def _with_source(constructor: Callable[..., types.CodeType], args: tuple[Any, ...],
                 filename: str, lines: list[str] | None) -> types.CodeType:
    """In the worker: the code object cloudpickle built, with its file name back, and the
    lines of a notebook cell registered where tracebacks look for them."""
    code = constructor(*args)
    if lines is not None and filename not in linecache.cache:
        # no mtime: linecache.checkcache keeps entries without one, as it does IPython's
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return code.replace(co_filename=filename)


class _TaskPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, but code objects keep their file names (nested ones too:
    a code object's constants go through this same table)."""

    def __init__(self, file: io.BytesIO, code_reduce: Callable[[types.CodeType], Any]) -> None:
        self._code_reduce = code_reduce
        # before __init__: the C pickler reads its dispatch table there
        self.dispatch_table = ChainMap({types.CodeType: self._reduce_code},
                                       getattr(cloudpickle.Pickler, "dispatch_table", {}))
        super().__init__(file)

    def _reduce_code(self, code: types.CodeType) -> Any:
        reduced = self._code_reduce(code)
        if not (isinstance(reduced, tuple) and len(reduced) == 2):
            return reduced
        constructor, args = reduced
        return _with_source, (constructor, args, code.co_filename, cell_lines(code.co_filename))
