"""What colabrun can see breaking a bit-exact resume, said once per cause.

Where a run does something colabrun cannot save or replay exactly (a loader it
cannot position, a generator it does not know), the run goes on: it still
resumes from its checkpoint, just not bit for bit. The user is told once per
cause and process, as an :class:`InexactResume` warning whose text names the
cause and the fix. Python prints warnings to the training process's stderr
(in the notebook, or ``colabrun run``'s output), where ``colabrun chaos`` finds them
in its runs' output by :data:`MARK` to name the cause in its verdict
(docs/concepts.md#rules-for-a-bit-exact-resume).
"""

from __future__ import annotations

import warnings

#: how each warning's text starts, so that a log reader can find them
MARK = "inexact resume:"

_said: set[str] = set()


class InexactResume(UserWarning):
    """The run does something that a resume cannot repeat bit for bit."""


def warn_inexact(cause: str, fix: str, *, stacklevel: int = 3) -> bool:
    """Warn once per ``cause`` in this process; returns whether it warned now.

    Args:
        cause: what breaks exactness, e.g. ``"run.batches() got an IterableDataset"``.
            Also the key that makes the warning said once.
        fix: what the user can do about it.
        stacklevel: as for :func:`warnings.warn`, counted from the caller.
    """
    if cause in _said:
        return False
    _said.add(cause)
    warnings.warn(f"{MARK} {cause}; {fix}", InexactResume, stacklevel=stacklevel)
    return True


def causes_in(text: str) -> list[str]:
    """The distinct causes named in ``text`` (a job log), in order of first appearance."""
    found: list[str] = []
    for line in text.splitlines():
        at = line.find(MARK)
        if at < 0:
            continue
        cause = line[at + len(MARK):].split(";", 1)[0].strip()
        if cause and cause not in found:
            found.append(cause)
    return found
