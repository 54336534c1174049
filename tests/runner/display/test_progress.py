"""Progress: one bar per epoch in the foreground, plain lines elsewhere, clean logs."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from colabrun import runner
from colabrun.jobs.spec import JobSpec
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView, wants_bar
from colabrun.state.storage import Storage


class FakeBar:
    made: list[FakeBar] = []
    lines: list[str] = []

    def __init__(self, *, total: int, initial: int, desc: str, **_: Any) -> None:
        self.total, self.n, self.desc, self.closed = total, initial, desc, False
        FakeBar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def write(line: str, file: Any = None) -> None:
        FakeBar.lines.append(line)


def test_a_bar_per_epoch_and_lines_around_it() -> None:
    FakeBar.made, FakeBar.lines = [], []
    view = ProgressView(enabled=True, make_bar=FakeBar)
    for batch in (1, 2, 5):
        view.update(epoch=0, epochs_total=2, batch=batch, batches_in_epoch=5)
    view.write("epoch 1/2 done")
    view.update(epoch=1, epochs_total=2, batch=3, batches_in_epoch=5)  # a resumed epoch
    view.close()
    first, second = FakeBar.made
    assert (first.desc, first.n, first.closed) == ("epoch 1/2", 5, True)
    assert (second.desc, second.n, second.total) == ("epoch 2/2", 3, 5)
    assert FakeBar.lines == ["epoch 1/2 done"]


def test_no_bar_when_not_a_terminal_or_asked_not_to() -> None:
    assert not wants_bar(None, io.StringIO())
    assert wants_bar(True, io.StringIO()) and not wants_bar(False, io.StringIO())
    FakeBar.made = []
    view = ProgressView(enabled=False, make_bar=FakeBar)
    view.update(epoch=0, epochs_total=1, batch=1, batches_in_epoch=3)
    assert FakeBar.made == []


def _train(run: Any) -> None:
    model = torch.nn.Linear(2, 1)
    run.track(model=model)
    for _ in run.epochs():
        for _x in run.batches(list(range(30))):
            run.step(loss=1.0)


def _spec(root: Path) -> JobSpec:
    return JobSpec(name="p", entrypoint=_train, epochs=2, root=str(root),
                   local_dir=str(root / "local"), supervise=False)


def test_real_bars_in_the_terminal_and_none_in_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    runner.run(_spec(tmp_path), progress=True, console=Console(out=out, storage=Storage()))
    shown = out.getvalue()
    assert "epoch 1/2" in shown and "step/s" in shown and "\r" in shown
    assert "colabrun: epoch 2/2 done, step 60: loss 1" in shown
    # each epoch line names its own save, though it may still be written in the background
    assert "step 30: loss 1; saved step-30 (local); durable: none yet" in shown
    assert re.search(r"step 60: loss 1; saved step-60 \((durable|local\); durable: "
                     r"(none yet|step-30, \d+s ago))", shown), shown
    log = (tmp_path / "p" / "log" / "colabrun.log").read_text()
    assert "\r" not in log and "step/s" not in log and "epoch 2/2 done" in log


def test_plain_lines_without_bars(tmp_path: Path) -> None:
    out = io.StringIO()
    runner.run(_spec(tmp_path), progress=False, console=Console(out=out))
    assert "\r" not in out.getvalue() and "epoch 1/2 done" in out.getvalue()
