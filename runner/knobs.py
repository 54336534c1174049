"""Debug and test knobs: the only place colabrun reads environment variables.

``COLABRUN_KILL_AT=POINT[:N]``
    SIGKILL this process the N-th time (default 1st) it passes the named
    point (``step``, ``epoch.end``, or a save/state/rotation point, see
    ``colabrun chaos --points``). Used by the crash tests and by users testing
    their own training code.
"""

from __future__ import annotations

import os


def kill_at() -> tuple[str, int] | None:
    """The point and occurrence of ``COLABRUN_KILL_AT``, if set."""
    value = os.environ.get("COLABRUN_KILL_AT", "").strip()
    if not value:
        return None
    point, _, nth = value.partition(":")
    return point, int(nth or 1)
