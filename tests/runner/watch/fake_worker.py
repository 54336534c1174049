"""A stand-in for a worker process, for the supervisor's tests of a group: it speaks the
worker's side of the socket (:mod:`colabrun.runner.watch.messages`) without training or
torch (it starts in half a second), and does what its script says.

Started (``python -c`` :data:`ENTRY`) by the tests with its script, ``;``-separated actions:

- ``beat:N``: N heartbeats, a new step each, 0.05 s apart;
- ``out:TEXT``: print TEXT (an :class:`Output`; ``|`` in TEXT is a line break);
- ``silent``: sleep, sending nothing (frozen, yet able to dump its stacks);
- ``stall``: beat at the same step, for ever (its training hangs);
- ``wait``: beat at the same step until a request comes, then print its class's name;
- ``micro:N``: report N micro-batches in its :class:`Ended` (1 unless told);
- ``end:EXIT[:DETAIL]``: send :class:`Ended` (``Exit(EXIT)``) and exit 0;
- ``kill``, ``stop``: SIGKILL or SIGSTOP itself.

It dumps its thread stacks on SIGUSR2 into the file it is given, as a worker does, and
exits when its parent is gone.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from colabrun.runner.watch.messages import Beat, Ended, Output
from colabrun.runner.watch.restarts import Exit

#: how the test starts one: ``python -c ENTRY PARENT FD STACKS SCRIPT``
ENTRY = "from tests.runner.watch.fake_worker import main; main()"
BEAT_S = 0.05


def main() -> None:
    """The fake's entry: ``PARENT FD STACKS SCRIPT`` in ``sys.argv``."""
    parent, fd, stacks, script = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conn = Connection(fd)
    Path(stacks).parent.mkdir(parents=True, exist_ok=True)
    faulthandler.register(signal.SIGUSR2, file=open(stacks, "a"),  # noqa: SIM115
                          all_threads=True)
    try:
        conn.recv_bytes()  # the task: the script says what to do
    except EOFError:
        os._exit(0)
    step, micro_batches = 0, 1
    for action in script.split(";"):
        name, _, arg = action.partition(":")
        if name == "beat":
            for _ in range(int(arg)):
                step += 1
                conn.send(Beat(step=step, epoch=0, phase="train"))
                _nap(parent)
        elif name == "micro":
            micro_batches = int(arg)
        elif name == "out":
            conn.send(Output(arg.replace("|", "\n")))
        elif name in ("silent", "stall"):
            while True:
                if name == "stall":
                    conn.send(Beat(step=step, epoch=0, phase="train"))
                _nap(parent)
        elif name == "wait":
            while not conn.poll():
                conn.send(Beat(step=step, epoch=0, phase="train"))
                _nap(parent)
            conn.send(Output(f"got {type(conn.recv()).__name__}"))
        elif name == "end":
            exit_, _, detail = arg.partition(":")
            conn.send(Ended(exit=Exit(exit_), detail=detail or exit_,
                            micro_batches=micro_batches))
            conn.close()
            os._exit(0)
        elif name in ("kill", "stop"):
            os.kill(os.getpid(), signal.SIGKILL if name == "kill" else signal.SIGSTOP)
        else:
            raise ValueError(f"unknown fake action {action!r}")
    os._exit(0)


def _nap(parent: int) -> None:
    if os.getppid() != parent:  # the test is gone: so are we
        os._exit(1)
    time.sleep(BEAT_S)
