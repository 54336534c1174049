"""The supervisor: runs the training in a worker process and watches it.

What cannot be handled from inside the worker is handled here
(docs/concepts.md#supervisor-and-worker):
a crash or a SIGKILL from the kernel's OOM killer (F6), a hang that holds the
GIL (F17), a CUDA OOM (F7), the runtime's deadline, interrupts (F5), control
requests, and the lease's heartbeat. A worker that could not begin (its imports failed:
:class:`~colabrun.runner.watch.messages.NotStarted`) is no crash: the job fails at once,
with the worker's traceback and what to do. Decisions are pure: restarts in
:mod:`~colabrun.runner.watch.restarts`, hangs in :mod:`~colabrun.runner.watch.stall`;
the lease is kept by :class:`~colabrun.runner.watch.lease_keeper.LeaseKeeper`'s thread.
This module only watches, signals and waits.
"""

from __future__ import annotations

import queue
import signal
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_result

from colabrun.jobs.errors import EntrypointError
from colabrun.jobs.imports import imported_here_hint
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView
from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.control import ControlWatcher
from colabrun.runner.watch.deadline import Deadline
from colabrun.runner.watch.interrupts import Interrupts
from colabrun.runner.watch.lease_keeper import LeaseKeeper, LeaseReport, Refresh
from colabrun.runner.watch.messages import (
    Beat,
    CheckpointRequest,
    Ended,
    Kill,
    KillReason,
    NotStarted,
    Output,
    StopRequest,
)
from colabrun.runner.watch.remote_error import restore_error
from colabrun.runner.watch.restarts import (
    RESTARTABLE,
    Attempt,
    Exit,
    attempts_without_progress,
    backoff_s,
    should_restart,
)
from colabrun.runner.watch.stall import StallLimits, StallWatch
from colabrun.runner.watch.worker import STACKS_NAME, WorkerTask
from colabrun.runner.watch.worker_process import WorkerProcess
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, LeaseLost

POLL_S = 0.2
UNKNOWN_REQUEST = "ignoring unknown request file control/{} (known: stop, checkpoint)"


@dataclass
class _Watch:
    """What one attempt has seen of its worker."""

    worker: WorkerProcess
    ended: Ended | None = None
    not_started: NotStarted | None = None
    stop_sent: bool = False
    kill: Kill | None = None


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
        view: the progress bars the worker's heartbeats move.
        warm: a worker started ahead (:meth:`WorkerProcess.start`), for the first attempt.
    """

    def __init__(self, spec: JobSpec, job: JobDir, *, fence: Fence, session: int,
                 clock: Clock, console: Console, deadline: Deadline,
                 search_path: tuple[Path, ...] = (), view: ProgressView | None = None,
                 warm: WorkerProcess | None = None) -> None:
        self.spec = spec
        self._warm = warm
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
        self.stall = StallWatch(StallLimits.of(spec.watchdog), now=clock.monotonic())
        self.interrupts = Interrupts()
        self._lease_problems: queue.SimpleQueue[LeaseReport] = queue.SimpleQueue()
        self.lease = LeaseKeeper(job.statefile, fence, interval_s=spec.lease_s / 4, clock=clock,
                                 on_problem=self._lease_problems.put)
        self._watcher = ControlWatcher(job.path, job.storage)

    def run(self) -> Outcome:
        """Train, restarting crashed or hung workers; return the final outcome."""
        stale, unknown = self._watcher.start()
        for name in stale:
            self.console.info(f"ignored a '{name}' request left from before this run")
        for name in unknown:
            self.console.warn(UNKNOWN_REQUEST.format(name))
        try:
            with self.interrupts, self.lease:
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
        if self.lease.lost is not None:  # found while waiting to restart: start nothing
            return _fenced(self.lease.lost)
        watch = _Watch(self._worker().give(self._task()))
        self.stall.restart(now=self.clock.monotonic())
        try:
            while watch.worker.is_running() and not self._act_on_lease(watch):
                self._receive(watch, timeout=POLL_S)
                self._act_on_interrupts(watch)
                self._act_on_requests(watch)
                self._check_stall(watch)
        finally:
            if watch.worker.is_running():
                self._kill(watch, Kill.because(KillReason.SUPERVISOR_STOPPED))
            watch.worker.wait()
        while self._receive(watch, timeout=0):
            pass
        watch.worker.close()
        return self._classify(watch)

    def _worker(self) -> WorkerProcess:
        """The worker started ahead, if it is still alive (or it said why it could not
        start: a new one would fail the same way); else a new one."""
        warm, self._warm = self._warm, None
        if warm is not None and (warm.is_running() or warm.did_not_start):
            return warm
        if warm is not None:
            warm.discard()
        return WorkerProcess.start()

    def _task(self) -> WorkerTask:
        return WorkerTask(spec=self.spec, root=self.job.root, fence=self.fence,
                          session=self.session, micro_batches=self.micro_batches,
                          deadline=self.deadline, search_path=self.search_path,
                          attempt=len(self.history))

    def _receive(self, watch: _Watch, *, timeout: float) -> bool:
        message = watch.worker.receive(timeout)
        if isinstance(message, Output):
            self.view.write(message.text)
        elif isinstance(message, Beat):
            self.stall.observe(message, now=self.clock.monotonic())
            self.view.update(epoch=message.epoch, epochs_total=message.epochs_total,
                             batch=message.batch, batches_in_epoch=message.batches_in_epoch,
                             metrics=message.metrics)
        elif isinstance(message, Ended):
            watch.ended = message
        elif isinstance(message, NotStarted):
            watch.not_started = message
        return message is not None

    # -- watching ---------------------------------------------------------------------

    def _check_stall(self, watch: _Watch) -> None:
        if watch.kill is not None:  # already dying: one verdict is enough
            return
        stall = self.stall.check(now=self.clock.monotonic())
        if stall is None:
            return
        self.console.warn(f"no progress for {stall.silent_s:.0f} s (limit {stall.limit_s:.0f} "
                          f"s, phase {stall.phase}): the training looks hung; its thread "
                          "stacks follow")
        stacks = watch.worker.dump_stacks(self.job.path / "log" / STACKS_NAME,
                                          sleep=self.clock.sleep)
        if stacks is not None:
            self.console.info(f"thread stacks of the hung worker:\n{stacks}")
        self._kill(watch, Kill(KillReason.HUNG, stall.detail()))

    def _kill(self, watch: _Watch, kill: Kill) -> None:
        watch.kill = watch.kill or kill
        watch.worker.kill()

    def _act_on_interrupts(self, watch: _Watch) -> None:
        if self.interrupts.count >= 2:
            watch.kill = Kill.because(KillReason.INTERRUPTED_TWICE)  # overrides any other
            self._kill(watch, watch.kill)
        elif self.interrupts.count == 1 and not watch.stop_sent:
            self.console.info("interrupted: saving at the next step, then stopping "
                              "(interrupt again to stop at once, without a save)")
            watch.worker.send(StopRequest("interrupted"))
            watch.stop_sent = True

    def _act_on_requests(self, watch: _Watch) -> None:
        requests, unknown = self._watcher.pending()
        for name in unknown:
            self.console.warn(UNKNOWN_REQUEST.format(name))
        for name in requests:
            self.console.info(f"'{name}' request received")
            if name == "stop":
                watch.worker.send(StopRequest("stop requested"))
                watch.stop_sent = True
            else:
                watch.worker.send(CheckpointRequest())

    def _act_on_lease(self, watch: _Watch) -> bool:
        """Say what the lease keeper reported; kill the worker if the lease is lost."""
        while not self._lease_problems.empty():
            report = self._lease_problems.get_nowait()
            if report.outcome is Refresh.STORAGE_FAILED:  # a lost mount: training goes on
                self.console.warn(f"cannot refresh the lease ({report.error}); training goes on")
        if self.lease.lost is None:
            return False
        self._kill(watch, Kill.because(KillReason.FENCED))
        return True

    # -- judging --------------------------------------------------------------------------

    def _classify(self, watch: _Watch) -> Outcome:
        kill = watch.kill
        reason = kill.reason if kill is not None else None
        if reason is KillReason.FENCED and self.lease.lost is not None:
            return _fenced(self.lease.lost)
        if watch.not_started is not None:
            return self._not_started(watch.not_started)
        if watch.ended is not None:
            return self._ended(watch.ended)
        if reason is KillReason.INTERRUPTED_TWICE:
            return Outcome(Exit.STOPPED, "interrupted twice: stopped at once, without a save",
                           exit_code=130)
        if kill is not None and reason is KillReason.HUNG:
            return Outcome(Exit.HUNG, kill.detail)
        code = watch.worker.returncode
        how = (f"was killed by {signal_name(-code)}" if code < 0
               else f"exited with code {code}")
        return Outcome(Exit.CRASHED, how)

    def _ended(self, ended: Ended) -> Outcome:
        self.micro_batches = ended.micro_batches
        return Outcome(ended.exit, ended.detail,
                       value=ended.value.load() if ended.value is not None else None,
                       error=restore_error(ended.error) if ended.error is not None else None,
                       exit_code=ended.exit_code)

    def _not_started(self, failure: NotStarted) -> Outcome:
        """The worker could not begin: its traceback goes to the console and the job log,
        and the job fails, without a restart (issue 18: each one failed the same way)."""
        if failure.traceback:
            self.console.info(failure.traceback.rstrip())
        hint = (imported_here_hint(failure.missing) or failure.hint
                or "its traceback is above, and in log/colabrun.log")
        detail = f"{failure.detail}; {hint}"
        error = EntrypointError(f"job {self.spec.name!r}: {detail}")
        return Outcome(Exit.FAILED, detail, error=error, exit_code=error.exit_code)

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


def _fenced(lost: LeaseLost) -> Outcome:
    """The outcome of a session whose job another runner took over."""
    return Outcome(Exit.FENCED, str(lost), error=lost, exit_code=lost.exit_code)


def signal_name(number: int) -> str:
    """The name of signal ``number``, as the user reads it in "was killed by SIGKILL".

    Args:
        number: a signal number.

    Returns:
        ``SIGKILL`` for 9; the number itself for a signal Python does not name.
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
