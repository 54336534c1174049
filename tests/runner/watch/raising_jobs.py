"""Training functions that raise, for the tests of errors crossing from the worker.

``params["raise"]`` picks the exception: ``quota`` a colabrun error with a field that
pickles, ``handle`` a :class:`HandleError`, ``keyword`` one whose constructor pickle
cannot call again (a required keyword-only argument).
"""

from __future__ import annotations

from typing import Any

from colabrun.jobs.errors import ColabrunError, HandleError


class QuotaError(ColabrunError, RuntimeError):
    """A colabrun-style error with a field, as a plugin or a later release might add."""

    exit_code = 5

    def __init__(self, message: str, used_bytes: int = 0) -> None:
        super().__init__(message)
        self.used_bytes = used_bytes


class KeywordError(Exception):
    """An exception pickle rebuilds as ``KeywordError(message)``, which raises TypeError."""

    def __init__(self, message: str, *, shard: int) -> None:
        super().__init__(message)
        self.shard = shard


def train(run: Any) -> None:
    which = run.params["raise"]
    if which == "quota":
        raise QuotaError("the scratch disk is full", used_bytes=123)
    if which == "handle":
        raise HandleError("run.step() called outside run.batches()")
    raise KeywordError("shard unreadable", shard=7)
