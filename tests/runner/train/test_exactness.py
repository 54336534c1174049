"""Exactness warnings: said once per cause, and found again in a log."""

from __future__ import annotations

import warnings

from colabrun.runner.train import exactness
from colabrun.runner.train.exactness import InexactResume, causes_in, warn_inexact


def test_a_cause_is_said_once_per_process_and_found_in_the_log(monkeypatch) -> None:
    monkeypatch.setattr(exactness, "_said", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_inexact("a loader it cannot position", "use a map-style dataset")
        assert not warn_inexact("a loader it cannot position", "use a map-style dataset")
        assert warn_inexact("an untracked torch.Generator 'g'", "run.track(g=g)")
    assert [type(w.message) for w in caught] == [InexactResume, InexactResume]
    log = "\n".join(f"12:00:00 worker: UserWarning: {w.message}" for w in caught) + "\nother\n"
    log += f"again: {caught[0].message}\n"
    assert causes_in(log) == ["a loader it cannot position", "an untracked torch.Generator 'g'"]
