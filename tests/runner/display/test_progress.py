"""Progress: one bar per epoch in the foreground, plain lines elsewhere, clean logs."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from colabrun import runner
from colabrun.jobs.spec import CheckpointPolicy, JobSpec
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView, postfix, wants_bar
from colabrun.state.storage import Storage


class FakeBar:
    made: list[FakeBar] = []
    lines: list[str] = []

    def __init__(self, *, total: int, initial: int, desc: str, **_: Any) -> None:
        self.total, self.n, self.desc, self.closed = total, initial, desc, False
        self.postfix: dict[str, str] = {}
        self.closed_at: int | None = None  # n when closed: below total, a notebook shows red
        FakeBar.made.append(self)

    def update(self, n: int) -> None:
        assert not self.closed
        self.n += n

    def set_postfix(self, postfix: dict[str, str], refresh: bool = True) -> None:
        self.postfix = postfix

    def close(self) -> None:
        self.closed, self.closed_at = True, self.n

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
    assert (first.desc, first.closed_at) == ("epoch 1/2", 5)
    assert (second.desc, second.total) == ("epoch 2/2", 5)
    assert FakeBar.lines == ["epoch 1/2 done"]


def test_every_bar_is_closed_full_so_a_notebook_clears_it() -> None:
    """tqdm's notebook bar closed below its total stays, red; full, it is cleared (leave off).
    The heartbeat is about once a second, so the last update is usually short of the end."""
    FakeBar.made = []
    view = ProgressView(enabled=True, make_bar=FakeBar)
    view.update(epoch=0, epochs_total=3, batch=14, batches_in_epoch=16)
    view.update(epoch=1, epochs_total=3, batch=7, batches_in_epoch=16)  # 0 ended at 14/16
    view.close()  # the run stopped within epoch 1
    assert [(b.desc, b.closed_at) for b in FakeBar.made] == [("epoch 1/3", 16), ("epoch 2/3", 16)]


def test_a_heartbeat_past_the_last_epoch_opens_no_bar() -> None:
    FakeBar.made = []
    view = ProgressView(enabled=True, make_bar=FakeBar)
    view.update(epoch=1, epochs_total=2, batch=5, batches_in_epoch=5)
    view.update(epoch=2, epochs_total=2, batch=0, batches_in_epoch=5)  # after the end
    view.close()
    assert [b.desc for b in FakeBar.made] == ["epoch 2/2"]  # no phantom "epoch 3/2"


def test_the_newest_metrics_are_beside_the_bar() -> None:
    FakeBar.made = []
    view = ProgressView(enabled=True, make_bar=FakeBar)
    view.update(epoch=0, epochs_total=1, batch=1, batches_in_epoch=5,
                metrics={"loss": 2.30861234, "lr": 0.1})
    view.update(epoch=0, epochs_total=1, batch=2, batches_in_epoch=5, metrics={"loss": 1.5})
    assert FakeBar.made[0].postfix == {"loss": "1.5"}
    assert postfix({"loss": 2.30861234, "acc": 0.975, "n": 12345678.0}) == {
        "loss": "2.309", "acc": "0.975", "n": "1.235e+07"}


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
    # every epoch ends with a save (``auto`` skips these epochs of a few milliseconds)
    return JobSpec(name="p", entrypoint=_train, epochs=2, root=str(root),
                   local_dir=str(root / "local"), supervise=False,
                   checkpoint=CheckpointPolicy(at_epoch_end=True))


def test_real_bars_in_the_terminal_and_none_in_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    runner.run(_spec(tmp_path), progress=True, console=Console(out=out, storage=Storage()))
    shown = out.getvalue()
    assert "epoch 1/2" in shown and "step/s" in shown and "\r" in shown
    assert "colabrun: epoch 2/2 done, step 60: loss 1" in shown
    # each epoch line names its own save, though it may still be written in the background
    # and what is durable: any earlier save whose upload ended (the session's first, at step
    # 1, is the adaptive cadence's measuring save), or none yet on a busy machine
    assert re.search(r"step 30: loss 1; saved step-30 \(local\); durable: "
                     r"(none yet|step-([1-9]|[12]\d), \d+s ago)", shown), shown
    assert re.search(r"step 60: loss 1; saved step-60 \((durable|local\); durable: "
                     r"(none yet|step-([1-9]|[1-5]\d), \d+s ago))", shown), shown
    log = (tmp_path / "p" / "log" / "colabrun.log").read_text()
    assert "\r" not in log and "step/s" not in log and "epoch 2/2 done" in log


def test_plain_lines_without_bars(tmp_path: Path) -> None:
    out = io.StringIO()
    runner.run(_spec(tmp_path), progress=False, console=Console(out=out))
    assert "\r" not in out.getvalue() and "epoch 1/2 done" in out.getvalue()
