"""The supervisor: runs the training in worker processes and watches them.

What cannot be handled from inside the worker is handled here
(docs/concepts.md#supervisor-and-worker):
a crash or a SIGKILL from the kernel's OOM killer (F6), a hang that holds the
GIL (F17), a CUDA OOM (F7), the runtime's deadline, interrupts (F5), control
requests, and the lease's heartbeat. A worker that could not begin (its imports failed:
:class:`~colabrun.runner.watch.messages.NotStarted`) is no crash: the job fails at once,
with the worker's traceback and what to do. Decisions are pure: restarts in
:mod:`~colabrun.runner.watch.restarts`, hangs in :mod:`~colabrun.runner.watch.stall`,
whose end is an attempt's in :func:`~colabrun.runner.watch.workers.verdict_of`; the
lease is kept by :class:`~colabrun.runner.watch.lease_keeper.LeaseKeeper`'s thread.
This module and :mod:`~colabrun.runner.watch.workers` only watch, signal and wait.

The supervisor keeps the policy: the attempts and their restarts, the lease, interrupts
and control requests, the stall watch's verdict, a CUDA OOM, and what an attempt's end
means to the job. Each attempt's worker processes are a
:class:`~colabrun.runner.watch.workers.Workers`: started, heard, seen to exit, their
stacks dumped, killed and reaped there. A job of several processes
(:class:`~colabrun.runner.dist.layout.Layout`, docs/concepts.md#several-processes) runs
one worker per process, as a group. The leader (process 0) is the group to the outside:
its heartbeats drive the bars and the stall watch (a peer that hangs holds it in a
collective), and requests, interrupts and the deadline go to it alone (it decides for
all). A process that exits without saying how its session ended takes the group down:
the others are killed and the attempt is a crash, restarted as a whole from the last
checkpoint. A follower that ends unfinished takes it down too, and its end is the
attempt's (its code raised: the job fails, naming it; a CUDA OOM in any process is the
attempt's OOM). A hung group has every process's stacks dumped (all judged by
:mod:`~colabrun.runner.watch.workers`).
"""

from __future__ import annotations

import queue
from pathlib import Path

from tenacity import Retrying, retry_if_result

from colabrun.jobs.errors import EntrypointError
from colabrun.jobs.imports import imported_here_hint
from colabrun.jobs.spec import JobSpec
from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView
from colabrun.runner.dist.layout import Layout
from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.control import ControlWatcher
from colabrun.runner.watch.deadline import Deadline
from colabrun.runner.watch.interrupts import Interrupts
from colabrun.runner.watch.lease_keeper import LeaseKeeper, LeaseReport, Refresh
from colabrun.runner.watch.messages import (
    CheckpointRequest,
    Ended,
    Kill,
    KillReason,
    NotStarted,
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
from colabrun.runner.watch.worker import WorkerTask
from colabrun.runner.watch.worker_process import WorkerProcess
from colabrun.runner.watch.workers import POLL_S, Address, Workers, start_processes
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, LeaseLost

UNKNOWN_REQUEST = "ignoring unknown request file control/{} (known: stop, checkpoint)"


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
        layout: the ranks and the processes running them (the leader's view); by default
            the spec's ranks, as virtual ranks of one process.
    """

    def __init__(self, spec: JobSpec, job: JobDir, *, fence: Fence, session: int,
                 clock: Clock, console: Console, deadline: Deadline,
                 search_path: tuple[Path, ...] = (), view: ProgressView | None = None,
                 warm: WorkerProcess | None = None, layout: Layout | None = None) -> None:
        self.spec = spec
        self._warm = warm
        self.job = job
        self.fence = fence
        self.session = session
        self.clock = clock
        self.console = console
        self.deadline = deadline
        self.search_path = search_path
        self.layout = layout or Layout(ranks=spec.distributed.ranks)
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
            whom = ("it" if self.layout.processes == 1
                    else f"all {self.layout.processes} processes")
            self.console.warn(f"the worker {what}; restarting {whom} from the last "
                              f"checkpoint in {backoff_s(self.history):.0f} s")
        return outcome

    def _attempt(self) -> Outcome:
        if self.lease.lost is not None:  # found while waiting to restart: start nothing
            return _fenced(self.lease.lost)
        warm, self._warm = self._warm, None
        workers = Workers(start_processes(self.layout.processes, self._task, warm=warm,
                                          clock=self.clock),
                          clock=self.clock, console=self.console, view=self.view,
                          stall=self.stall, heartbeat_s=self.spec.watchdog.heartbeat_s,
                          log=self.job.path / "log")
        self.stall.restart(now=self.clock.monotonic())
        try:
            while workers.goes_on() and not self._act_on_lease(workers):
                workers.receive(timeout=POLL_S)
                self._act_on_interrupts(workers)
                self._act_on_requests(workers)
                self._check_stall(workers)
                workers.check_exits()
        finally:
            workers.reap()
        workers.finish()
        return self._classify(workers)

    def _task(self, process: int = 0, address: Address | None = None) -> WorkerTask:
        return WorkerTask(spec=self.spec, root=self.job.root, fence=self.fence,
                          session=self.session, micro_batches=self.micro_batches,
                          deadline=self.deadline, search_path=self.search_path,
                          attempt=len(self.history), layout=self.layout.of_process(process),
                          address=address)

    # -- watching -------------------------------------------------------------------------

    def _check_stall(self, workers: Workers) -> None:
        """The stall watch judges the leader's progress (a peer that hangs holds it in a
        collective); the group's processes are judged by their heartbeats
        (:meth:`Workers.check_silent`)."""
        if workers.kill is not None or workers.leader.ended is not None:  # dying, or decided
            return
        now = self.clock.monotonic()
        stall = self.stall.check(now=now)
        if stall is None:
            workers.check_silent(now=now)
            return
        stacks = ("its thread stacks follow" if not workers.grouped
                  else f"the thread stacks of its {len(workers.processes)} processes follow")
        self.console.warn(f"no progress for {stall.silent_s:.0f} s (limit "
                          f"{stall.limit_s:.0f} s, phase {stall.phase}): the training "
                          f"looks hung; {stacks}")
        workers.dump_stacks()
        workers.kill_all(Kill(KillReason.HUNG, stall.detail()))

    def _act_on_interrupts(self, workers: Workers) -> None:
        if self.interrupts.count >= 2:
            workers.kill = Kill.because(KillReason.INTERRUPTED_TWICE)  # overrides any other
            workers.kill_all(workers.kill)
        elif self.interrupts.count == 1 and not workers.stop_sent:
            self.console.info("interrupted: saving at the next step, then stopping "
                              "(interrupt again to stop at once, without a save)")
            workers.tell(StopRequest("interrupted"))

    def _act_on_requests(self, workers: Workers) -> None:
        requests, unknown = self._watcher.pending()
        for name in unknown:
            self.console.warn(UNKNOWN_REQUEST.format(name))
        for name in requests:
            self.console.info(f"'{name}' request received")
            workers.tell(StopRequest("stop requested") if name == "stop"
                         else CheckpointRequest())

    def _act_on_lease(self, workers: Workers) -> bool:
        """Say what the lease keeper reported; kill the workers if the lease is lost."""
        while not self._lease_problems.empty():
            report = self._lease_problems.get_nowait()
            if report.outcome is Refresh.STORAGE_FAILED:  # a lost mount: training goes on
                self.console.warn(f"cannot refresh the lease ({report.error}); training goes on")
        if self.lease.lost is None:
            return False
        workers.kill_all(Kill.because(KillReason.FENCED))
        return True

    # -- judging --------------------------------------------------------------------------

    def _classify(self, workers: Workers) -> Outcome:
        """How the attempt ended: fenced when the workers were killed for a lost lease;
        failed at once when one could not start; else as its processes show it
        (:func:`~colabrun.runner.watch.workers.verdict_of`), a report made an outcome here."""
        kill = workers.kill
        if kill is not None and kill.reason is KillReason.FENCED and self.lease.lost is not None:
            return _fenced(self.lease.lost)
        failure = workers.not_started()
        if failure is not None:
            return self._not_started(failure)
        verdict = workers.verdict()
        if isinstance(verdict, Outcome):
            return verdict
        ended, process = verdict
        return self._ended(ended, process=process, micro_batches=workers.micro_batches())

    def _ended(self, ended: Ended, *, process: int = 0,
               micro_batches: int | None = None) -> Outcome:
        """The outcome a worker reported; a follower's names its process. The next
        attempt splits each batch into the most micro-batches any process reported
        (``micro_batches``; by default ``ended``'s)."""
        self.micro_batches = micro_batches or ended.micro_batches
        return Outcome(ended.exit, ended.detail if process == 0
                       else f"process {process}: {ended.detail}",
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

