"""The progress bar: one per epoch, drawn by the foreground process.

Training may run in a worker whose output arrives as lines; the bar lives in
the foreground (the supervisor, or the in-process runner) and is fed by the
heartbeat. ``tqdm.auto`` picks a widget in notebooks and text on a terminal.
When output is not a terminal (a log file, CI) or the user asked for
``--no-progress``, there is no bar at all: only the plain per-epoch lines,
so no bar garbage lands in files.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO


def in_notebook() -> bool:
    """Whether this process is a Jupyter/Colab kernel."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    kernel = get() if get else None
    return kernel is not None and "IPKernelApp" in getattr(kernel, "config", {})


def wants_bar(option: bool | None, out: TextIO | None = None) -> bool:
    """``option`` if given; else a bar on a terminal or in a notebook."""
    if option is not None:
        return option
    stream = out or sys.stdout
    return in_notebook() or bool(getattr(stream, "isatty", lambda: False)())


class ProgressView:
    """Per-epoch bars fed with ``(epoch, batch, batches_in_epoch)``; lines around them.

    Args:
        enabled: draw bars at all.
        out: where bars and lines go (the terminal's stdout by default).
        make_bar: the bar factory (``tqdm.auto.tqdm``; tests pass their own).
    """

    def __init__(self, *, enabled: bool, out: TextIO | None = None,
                 make_bar: Callable[..., Any] | None = None) -> None:
        self.enabled = enabled
        self.out = out
        self._make_bar = make_bar
        self._bar: Any = None
        self._epoch: int | None = None

    def update(self, *, epoch: int, epochs_total: int, batch: int,
               batches_in_epoch: int | None, metrics: Mapping[str, float] | None = None
               ) -> None:
        """Move the bar to ``batch`` of ``epoch`` (opening a new bar for a new epoch), with
        the newest ``metrics`` beside it."""
        if not self.enabled or batches_in_epoch is None or epoch >= epochs_total > 0:
            return  # past the last epoch: a heartbeat after the end opens no bar
        if epoch != self._epoch or self._bar is None:
            self.close()
            self._bar = self._factory()(
                total=batches_in_epoch, initial=min(batch, batches_in_epoch),
                desc=f"epoch {epoch + 1}/{epochs_total}", unit="step", leave=False,
                file=self.out or sys.stdout, dynamic_ncols=True)
            self._epoch = epoch
        else:
            self._bar.update(max(0, min(batch, batches_in_epoch) - self._bar.n))
        if metrics:
            self._bar.set_postfix(postfix(metrics), refresh=False)

    def write(self, line: str) -> None:
        """Print a line without tearing the bar."""
        if self._bar is not None:
            self._factory().write(line, file=self.out or sys.stdout)
        else:
            print(line, file=self.out or sys.stdout, flush=True)

    def close(self) -> None:
        """Remove the current bar: filled first, so a notebook's widget is cleared (a bar
        closed short stays, red), whether its epoch ended or the run stopped within it."""
        if self._bar is not None:
            if self._bar.total:
                self._bar.update(max(0, self._bar.total - self._bar.n))
            self._bar.close()
            self._bar = None
            self._epoch = None

    def _factory(self) -> Any:
        if self._make_bar is None:
            from tqdm.auto import tqdm

            # tqdm's monitor thread only nudges stalled bars; ours are refreshed by the
            # heartbeat, and a thread left behind would outlive the run
            tqdm.monitor_interval = 0
            self._make_bar = tqdm
        return self._make_bar


def postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    """The bar's postfix: each metric to 4 significant figures. Pure."""
    return {name: f"{value:.4g}" for name, value in metrics.items()}


class ViewStream:
    """A text stream whose lines go through :meth:`ProgressView.write`."""

    def __init__(self, view: ProgressView) -> None:
        self.view = view
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition("\n")
            self.view.write(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.view.write(self._buffer)
            self._buffer = ""

    def isatty(self) -> bool:
        return False
