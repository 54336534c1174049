"""Tier 1 for :class:`NotStarted`: what a worker that could not begin sends. One that cannot
import colabrun sends it as builtins; the supervisor reads it back, and nothing else as it."""

from __future__ import annotations

import pickle

from colabrun.runner.watch.messages import NOT_STARTED, NotStarted


def test_the_builtin_form_crosses_a_pickle_and_reads_back_as_the_message() -> None:
    sent = NotStarted("the worker process cannot import colabrun (ImportError: x)",
                      hint="", traceback="Traceback ...\nImportError: x\n", missing="")
    wire = pickle.loads(pickle.dumps(sent.wire()))
    assert all(type(part) is str for part in wire)
    assert NotStarted.from_wire(wire) == sent


def test_anything_else_is_not_read_as_one() -> None:
    assert NotStarted.from_wire(("something", "a", "b", "c", "d")) is None
    assert NotStarted.from_wire((NOT_STARTED, "a", "b", "c")) is None
    assert NotStarted.from_wire((NOT_STARTED, "a", "b", "c", 4)) is None
    assert NotStarted.from_wire(["not", "a", "tuple"]) is None
