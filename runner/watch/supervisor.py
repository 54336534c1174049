"""The supervisor: runs the training in a worker process and watches it.

What cannot be handled from inside the worker is handled here
(docs/concepts.md#supervisor-and-worker):
a crash or a SIGKILL from the kernel's OOM killer (F6), a hang that holds the
GIL (F17), a CUDA OOM (F7), the runtime's deadline, interrupts (F5), control
requests, and the lease's heartbeat. Decisions are the pure functions of
:mod:`colabrun.runner.watch.restarts`; this module only watches, signals and waits.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle
from tenacity import Retrying, retry_if_result

from colabrun.jobs.errors import ColabrunError
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView
from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.control import ControlWatcher
from colabrun.runner.watch.deadline import Deadline
from colabrun.runner.watch.restarts import (
    RESTARTABLE,
    Attempt,
    Exit,
    attempts_without_progress,
    backoff_s,
    should_restart,
    stall_timeout_s,
)
from colabrun.runner.watch.worker import STACKS_NAME, WorkerTask
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, LeaseLost, heartbeat

POLL_S = 0.2
#: how the worker starts (not ``-m colabrun.runner.watch.worker``: runpy warns when the package
#: it runs from already imported the module)
WORKER_ENTRY = ("import sys; from multiprocessing.connection import Connection; "
                "from colabrun.runner.watch.worker import worker_main; "
                "worker_main(Connection(int(sys.argv[1])))")
EXEMPT_PHASES = ("save", "load")


@dataclass
class _Watch:
    """What one attempt has seen of its worker."""

    process: subprocess.Popen[bytes]
    conn: Connection
    end: dict[str, Any] | None = None
    key: tuple[Any, ...] = ()
    phase: str = "setup"
    step_s: float | None = None
    last_progress: float = 0.0
    stop_sent: bool = False
    killed_for: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Runs one session's training in worker processes until it ends.

    Args:
        spec: the job.
        job: the job's folder.
        fence: the session's lease (fencing).
        session: the session's index.
        clock: the injected clock.
        console: where messages go.
        deadline: this runtime's deadline.
        search_path: folders the worker imports the entrypoint from.
    """

    def __init__(self, spec: JobSpec, job: JobDir, *, fence: Fence, session: int,
                 clock: Clock, console: Console, deadline: Deadline,
                 search_path: tuple[Path, ...] = (), view: ProgressView | None = None) -> None:
        self.spec = spec
        self.job = job
        self.fence = fence
        self.session = session
        self.clock = clock
        self.console = console
        self.deadline = deadline
        self.search_path = search_path
        self.view = view or ProgressView(enabled=False, out=console.out)
        self.micro_batches = 1
        self.history: list[Attempt] = []
        self.longest_gap_s: float | None = None
        self.interrupts = 0
        self._last_lease_beat = clock.monotonic()
        self._watcher = ControlWatcher(job.path, job.storage)

    def run(self) -> Outcome:
        """Train, restarting crashed or hung workers; return the final outcome."""
        stale, unknown = self._watcher.start()
        for name in stale:
            self.console.info(f"ignored a '{name}' request left from before this run")
        for name in unknown:
            self.console.warn(f"ignoring unknown request file control/{name} (known: stop, "
                              "checkpoint)")
        try:
            with self._interrupts_counted():
                outcome = Retrying(
                    retry=retry_if_result(lambda _: should_restart(
                        self.history, cap=self.spec.watchdog.max_restarts)),
                    wait=lambda _: backoff_s(self.history),
                    sleep=self.clock.sleep,
                    reraise=True,
                )(self._attempt_and_judge)
        finally:
            self._watcher.stop()
            self.view.close()
        if outcome.exit in RESTARTABLE:
            return self._gave_up(outcome)
        return outcome

    # -- one attempt ----------------------------------------------------------------

    def _attempt_and_judge(self) -> Outcome:
        before = self._latest_checkpoint()
        outcome = self._attempt()
        if outcome.exit is Exit.OOM:
            outcome = self._on_oom(outcome)
        self.history.append(Attempt(outcome.exit, self._latest_checkpoint() != before,
                                    outcome.detail))
        if should_restart(self.history, cap=self.spec.watchdog.max_restarts):
            what = "ran out of CUDA memory" if outcome.exit is Exit.OOM else outcome.detail
            self.console.warn(f"the worker {what}; restarting it from the last "
                              f"checkpoint in {backoff_s(self.history):.0f} s")
        return outcome

    def _attempt(self) -> Outcome:
        watch = self._start_worker()
        try:
            while watch.process.poll() is None:
                self._receive(watch, timeout=POLL_S)
                self._act_on_interrupts(watch)
                self._act_on_requests(watch)
                self._beat_lease()
                self._check_stall(watch)
        except LeaseLost as exc:
            self._kill(watch, "fenced")
            return Outcome(Exit.FENCED, str(exc), error=exc, exit_code=exc.exit_code)
        finally:
            if watch.process.poll() is None:
                self._kill(watch, watch.killed_for or "supervisor stopped")
            watch.process.wait()
        while self._receive(watch, timeout=0):
            pass
        watch.conn.close()
        return self._classify(watch)

    def _start_worker(self) -> _Watch:
        task = WorkerTask(spec=self.spec, root=self.job.root, fence=self.fence,
                          session=self.session, micro_batches=self.micro_batches,
                          deadline=self.deadline, search_path=self.search_path,
                          attempt=len(self.history))
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_ENTRY, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send_bytes(cloudpickle.dumps(task))
        return _Watch(process=process, conn=conn, last_progress=self.clock.monotonic())

    def _receive(self, watch: _Watch, *, timeout: float) -> bool:
        try:
            if not watch.conn.poll(timeout):
                return False
            message = watch.conn.recv()
        except (EOFError, OSError):
            return False
        kind = message.get("kind")
        if kind == "out":
            self.view.write(message["text"])
        elif kind == "beat":
            self._on_beat(watch, message)
        elif kind == "end":
            watch.end = message
        return True

    def _on_beat(self, watch: _Watch, beat: dict[str, Any]) -> None:
        now = self.clock.monotonic()
        key = (beat["step"], beat["epoch"], beat["phase"])
        watch.step_s = beat.get("step_s") or watch.step_s
        if beat["phase"] in EXEMPT_PHASES or watch.phase in EXEMPT_PHASES:
            watch.last_progress = now  # saves and loads never count as a stall
        elif key != watch.key:
            gap = now - watch.last_progress
            if watch.key and watch.phase != "setup":
                self.longest_gap_s = max(self.longest_gap_s or 0.0, gap)
            watch.last_progress = now
        watch.key, watch.phase = key, beat["phase"]
        self.view.update(epoch=beat["epoch"], epochs_total=beat.get("epochs_total") or 0,
                         batch=beat.get("batch") or 0,
                         batches_in_epoch=beat.get("batches_in_epoch"))

    # -- watching ---------------------------------------------------------------------

    def _check_stall(self, watch: _Watch) -> None:
        if watch.killed_for:  # already dying: one verdict is enough
            return
        policy = self.spec.watchdog
        limit = stall_timeout_s(step_s=watch.step_s, longest_gap_s=self.longest_gap_s,
                                factor=policy.stall_factor, floor_s=policy.stall_floor_s)
        if watch.phase == "setup":  # loading data and building the model may take long
            limit = max(limit, policy.setup_s)
        silent = self.clock.monotonic() - watch.last_progress
        if watch.phase in EXEMPT_PHASES or silent < limit:
            return
        self.console.warn(f"no progress for {silent:.0f} s (limit {limit:.0f} s, phase "
                          f"{watch.phase}): the training looks hung; its thread stacks follow")
        self._dump_stacks(watch)
        watch.killed_for = f"hung for {silent:.0f} s at step {watch.key[0] if watch.key else 0}"
        self._kill(watch, watch.killed_for)

    def _dump_stacks(self, watch: _Watch) -> None:
        stacks = self.job.path / "log" / STACKS_NAME
        offset = stacks.stat().st_size if stacks.exists() else 0
        try:
            os.kill(watch.process.pid, signal.SIGUSR2)
        except ProcessLookupError:
            return
        self.clock.sleep(1.0)  # faulthandler writes from a signal handler, in C
        if stacks.exists():
            with open(stacks, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                self.console.info(f"thread stacks of the hung worker:\n{f.read().rstrip()}")

    def _kill(self, watch: _Watch, reason: str) -> None:
        watch.killed_for = watch.killed_for or reason
        if watch.process.poll() is None:
            watch.process.kill()

    def _act_on_interrupts(self, watch: _Watch) -> None:
        if self.interrupts >= 2:
            watch.killed_for = "interrupted twice"
            self._kill(watch, "interrupted twice")
        elif self.interrupts == 1 and not watch.stop_sent:
            self.console.info("interrupted: saving at the next step, then stopping "
                              "(interrupt again to stop at once, without a save)")
            watch.conn.send({"kind": "stop", "reason": "interrupted"})
            watch.stop_sent = True

    def _act_on_requests(self, watch: _Watch) -> None:
        requests, unknown = self._watcher.pending()
        for name in unknown:
            self.console.warn(f"ignoring unknown request file control/{name} (known: stop, "
                              "checkpoint)")
        for name in requests:
            self.console.info(f"'{name}' request received")
            if name == "stop":
                watch.conn.send({"kind": "stop", "reason": "stop requested"})
                watch.stop_sent = True
            else:
                watch.conn.send({"kind": "checkpoint"})

    def _beat_lease(self) -> None:
        if self.clock.monotonic() - self._last_lease_beat < self.spec.lease_s / 4:
            return
        self._last_lease_beat = self.clock.monotonic()
        now = self.clock.time()
        try:
            self.job.statefile.update(lambda s: heartbeat(s, self.fence, now=now))
        except LeaseLost:
            raise
        except (ColabrunError, OSError) as exc:  # a lost mount: training goes on locally
            self.console.warn(f"cannot refresh the lease ({exc}); training goes on")

    @contextmanager
    def _interrupts_counted(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: Any) -> None:
            self.interrupts += 1

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- judging --------------------------------------------------------------------------

    def _classify(self, watch: _Watch) -> Outcome:
        end = watch.end
        if end is not None:
            self.micro_batches = int(end.get("micro_batches", self.micro_batches))
            detail = str(end["detail"])
            return Outcome(Exit(end["exit"]), detail, value=end.get("value"),
                           error=_rebuild_error(end.get("error"), detail),
                           exit_code=int(end.get("exit_code", 0)))
        if watch.killed_for == "interrupted twice":
            return Outcome(Exit.STOPPED, "interrupted twice: stopped at once, without a save",
                           exit_code=130)
        if watch.killed_for and watch.killed_for.startswith("hung"):
            return Outcome(Exit.HUNG, watch.killed_for)
        code = watch.process.returncode or 0
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        return Outcome(Exit.CRASHED, how)

    def _on_oom(self, outcome: Outcome) -> Outcome:
        if not self.spec.watchdog.oom_halve_batch:
            return Outcome(Exit.FAILED, f"{outcome.detail}; set watchdog.oom_halve_batch: true "
                           "to retry with smaller micro-batches, or reduce the batch size",
                           exit_code=1)
        self.micro_batches *= 2
        self.console.warn(f"CUDA ran out of memory: restarting with {self.micro_batches} "
                          "micro-batches per batch (same effective batch, via run.split)")
        return outcome

    def _gave_up(self, outcome: Outcome) -> Outcome:
        misses = attempts_without_progress(self.history)
        return Outcome(Exit.FAILED, (
            f"the worker {outcome.detail}, and {misses} attempts in a row made no progress "
            f"(no new checkpoint; cap watchdog.max_restarts={self.spec.watchdog.max_restarts}); "
            "the job log (log/colabrun.log) shows the cause"), exit_code=1)

    def _latest_checkpoint(self) -> str | None:
        state = self.job.statefile.read()
        latest = state.latest_checkpoint if state else None
        return latest.name if latest else None


def _rebuild_error(ref: str | None, message: str) -> ColabrunError | None:
    """The worker's colabrun error, as the same class here (``except HandleError`` works)."""
    if not ref:
        return None
    module_name, _, qualname = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, ColabrunError)):
        return None
    try:
        return cls(message)
    except TypeError:
        return None
