"""One attempt's worker processes, as the supervisor watches them.

:func:`start_processes` starts them (the worker started ahead first, if it is still
alive) and gives them their tasks; :class:`Workers` then takes their messages, sees them
exit, has them dump their thread stacks, kills and reaps them. The policy stays the
supervisor's (:mod:`~colabrun.runner.watch.supervisor`): the attempts and their restarts,
the lease, interrupts and control requests, the stall watch's verdict, a CUDA OOM, and
what an attempt's end means to the job.

With one process, that one is the worker, and says what it always said. A group of
several (docs/concepts.md#several-processes) meets on a fresh port of this machine for
the leader's c10d store (:func:`free_port`). The leader (process 0) speaks for it: its
heartbeats move the bars and feed the stall watch, its printed lines are the job's (the
others' are prefixed ``[process N]``), requests go to it alone (:meth:`Workers.tell`).
What only the group shows is judged here: a process that exits without saying how its
session ended, or a follower that ends unfinished (its code raised, CUDA ran out of memory),
takes the group down at once (the others, waiting for it in a collective, are killed);
once the leader is gone the others get :data:`GRACE_S` to end; a follower silent for the
stall limit, or quiet for :data:`QUIET_BEATS` heartbeats when the leader ended unfinished,
hung (every process's stacks are dumped, a stopped one's once the others are killed); and
whose end is the attempt's (:func:`verdict_of`, pure: a follower's failure is the cause,
the leader's crash on losing its group its consequence; any process's CUDA OOM is the
attempt's).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from colabrun.runner.clock import Clock
from colabrun.runner.display.console import Console
from colabrun.runner.display.progress import ProgressView
from colabrun.runner.train.training import Outcome
from colabrun.runner.watch.messages import (
    Beat,
    Ended,
    Kill,
    KillReason,
    NotStarted,
    Output,
    StopRequest,
    SupervisorMessage,
    WorkerMessage,
)
from colabrun.runner.watch.restarts import Exit
from colabrun.runner.watch.stall import Stall, StallWatch
from colabrun.runner.watch.worker import WorkerTask, stacks_name
from colabrun.runner.watch.worker_process import (
    STACKS_WAIT_S,
    WorkerProcess,
    is_stopped,
    read_stacks,
)

#: how long one poll waits for the workers' messages
POLL_S = 0.2
#: where a group's processes meet: the leader's c10d store listens on this machine only
LOCALHOST = "127.0.0.1"
#: how long a group's other processes get to end once the leader has, before they are killed
GRACE_S = 10.0
#: heartbeat periods without one after which a process that outlived its failed leader
#: counts as hung (at most half the stall floor)
QUIET_BEATS = 5
#: the leader's outcomes that stand whatever the other processes of its group did
FINISHED = frozenset({Exit.COMPLETED, Exit.STOPPED, Exit.FENCED})

#: where the leader's c10d store listens: host and port
Address = tuple[str, int]
#: a process's task, by its index in the group and its store's address (``None``: alone)
TaskOf = Callable[[int, Address | None], WorkerTask]


@dataclass
class _Process:
    """What one attempt has seen of one of its workers."""

    worker: WorkerProcess
    #: its index in the group (0: the leader, or the worker alone)
    index: int = 0
    ended: Ended | None = None
    not_started: NotStarted | None = None
    #: the monotonic time of its last heartbeat (its start, before the first)
    beat_at: float = 0.0
    #: whether its exit was seen, and what it sent before read to the end
    exited: bool = False
    #: whether the supervisor killed it (then its death is no crash of its own)
    killed: bool = False


def start_processes(count: int, task: TaskOf, *, warm: WorkerProcess | None,
                    clock: Clock) -> list[_Process]:
    """Start an attempt's workers and give them their tasks: the leader (the worker
    started ahead, if it is still alive) and, in a group, the other processes, all told
    where the leader's store listens (a port free now: each attempt takes a fresh one).

    Args:
        count: how many processes the attempt runs.
        task: each one's task.
        warm: the worker started ahead, if any (:meth:`WorkerProcess.start`).
        clock: the injected clock (a process's heartbeats are timed from its start).

    Returns:
        The processes, the leader first; none is left running if one could not start.
    """
    address = (LOCALHOST, free_port(LOCALHOST)) if count > 1 else None
    workers: list[WorkerProcess] = []
    try:
        workers.append(_first_worker(warm))
        for _ in range(1, count):
            workers.append(WorkerProcess.start())
    except BaseException:  # cannot start them all: none may be left behind
        for worker in workers:
            worker.kill()
            worker.wait()
            worker.close()
        raise
    now = clock.monotonic()
    return [_Process(worker.give(task(index, address)), index, beat_at=now)
            for index, worker in enumerate(workers)]


def _first_worker(warm: WorkerProcess | None) -> WorkerProcess:
    """The worker started ahead, if it is still alive (or it said why it could not
    start: a new one would fail the same way); else a new one."""
    if warm is not None and (warm.is_running() or warm.did_not_start):
        return warm
    if warm is not None:
        warm.discard()
    return WorkerProcess.start()


class Workers:
    """One attempt's worker processes, the leader first.

    Args:
        processes: the attempt's processes, given their tasks (:func:`start_processes`).
        clock: the injected clock.
        console: where messages go.
        view: the progress bars: the leader's heartbeats move them, every printed line
            is written there.
        stall: the session's stall watch, fed the leader's heartbeats.
        heartbeat_s: how often a worker beats (``watchdog.heartbeat_s``).
        log: the job's log folder, where each process's stacks file lies.
    """

    def __init__(self, processes: list[_Process], *, clock: Clock, console: Console,
                 view: ProgressView, stall: StallWatch, heartbeat_s: float, log: Path) -> None:
        self.processes = processes
        self.clock = clock
        self.console = console
        self.view = view
        self.stall = stall
        self.heartbeat_s = heartbeat_s
        self.log = log
        #: why the supervisor killed them (the first reason given stands)
        self.kill: Kill | None = None
        #: whether the leader was asked to stop (it decides for all)
        self.stop_sent = False
        #: the first process that exited on its own without saying how its session ended
        self.lost: _Process | None = None
        #: when the leader was seen to exit (the others then have :data:`GRACE_S` to end)
        self.leader_gone_at: float | None = None

    @property
    def leader(self) -> _Process:
        """Process 0: it decides, saves, and speaks for the group."""
        return self.processes[0]

    @property
    def grouped(self) -> bool:
        """Whether the attempt runs a group of several processes."""
        return len(self.processes) > 1

    def running(self) -> list[_Process]:
        """The processes that have not exited yet."""
        return [each for each in self.processes if each.worker.is_running()]

    def goes_on(self) -> bool:
        """Whether the attempt is still on: no process was lost, and one still runs."""
        return self.lost is None and bool(self.running())

    def tell(self, message: SupervisorMessage) -> None:
        """Send a request to the leader: it decides for all (a stop is kept in
        :attr:`stop_sent`)."""
        self.leader.worker.send(message)
        self.stop_sent = self.stop_sent or isinstance(message, StopRequest)

    def not_started(self) -> NotStarted | None:
        """Why a worker could not begin, if one could not (the first to say so)."""
        return next((each.not_started for each in self.processes
                     if each.not_started is not None), None)

    # -- hearing them -----------------------------------------------------------------

    def receive(self, *, timeout: float) -> bool:
        """Take the next message of each worker that sent one, waiting up to ``timeout``
        seconds for any; whether any came."""
        listening = [each for each in self.processes if not each.worker.at_eof]
        ready = wait([each.worker.conn for each in listening], timeout)
        got = False
        for each in listening:  # the leader first
            if each.worker.conn not in ready:
                continue
            message = each.worker.receive(0)
            if message is not None:
                self._take(each, message)
                got = True
        return got

    def _take(self, each: _Process, message: WorkerMessage) -> None:
        """Act on one message of process ``each``."""
        if isinstance(message, Output):
            if each.index == 0:  # the leader keeps its own job log
                self.view.write(message.text)
            else:
                said = _prefixed(message.text, f"[process {each.index}] ")
                self.view.write(said)
                self.console.record(said)
        elif isinstance(message, Beat):
            now = self.clock.monotonic()
            each.beat_at = now
            if each.index == 0:  # the others' steps follow the leader's
                self.stall.observe(message, now=now)
                self.view.update(epoch=message.epoch, epochs_total=message.epochs_total,
                                 batch=message.batch, batches_in_epoch=message.batches_in_epoch,
                                 metrics=message.metrics)
        elif isinstance(message, Ended):
            each.ended = message
        elif isinstance(message, NotStarted):
            each.not_started = message

    # -- watching them ----------------------------------------------------------------

    def check_exits(self) -> None:
        """Read to the end what each newly exited worker sent. One that exited on its own
        without an :class:`Ended` (a crash, a SIGKILL) or that could not start takes its
        group down: the others are killed; so does a follower that ended unfinished
        (:meth:`_take_down`). Once the leader is gone the others get :data:`GRACE_S` to
        end, then are killed."""
        for each in self.processes:
            if each.exited or each.worker.is_running():
                continue
            each.exited = True
            while (message := each.worker.receive(0)) is not None:
                self._take(each, message)
            if each.ended is not None:
                if each.index > 0 and each.ended.exit not in FINISHED:
                    self._take_down(each, each.ended)
                continue
            if (each.not_started is None and not each.killed and self.kill is None
                    and self.lost is None):
                self.lost = each
            if self.grouped and self.running():
                self._kill_workers()
        if not self.grouped or not self.leader.exited or not self.running():
            return
        now = self.clock.monotonic()
        if self.leader_gone_at is None:
            self.leader_gone_at = now
            self._check_frozen(now=now)
        elif now - self.leader_gone_at >= GRACE_S:
            late = [str(each.index) for each in self.running()]
            which = "process" if len(late) == 1 else "processes"
            self.console.info(f"{which} {', '.join(late)} still ran {GRACE_S:.0f} s after the "
                              "leader ended: killed")
            self._kill_workers()

    def _take_down(self, each: _Process, ended: Ended) -> None:
        """Follower ``each`` ended unfinished (``ended``: its code raised, CUDA ran out of
        memory, it lost its group): the others would wait for it in their next collective
        until it timed out, so they are killed now; its end is the cause
        (:func:`cause_of`)."""
        if self.kill is not None or self.lost is not None or not self.running():
            return
        self.console.info(f"process {each.index} ended ({ended.exit.value}): the other "
                          "processes are killed")
        self._kill_workers()

    def check_silent(self, *, now: float) -> None:
        """A process of the group, other than the leader, that has sent no heartbeat for
        the stall limit is frozen (its heartbeat thread beats while training waits in a
        collective): it hung (:meth:`_hung`)."""
        limit = self.stall.limit_s()
        each = quiet_follower(self.processes, now=now, after_s=limit)
        if each is not None:
            self._hung(each, now=now, limit_s=limit, opening=(
                f"process {each.index} sent no heartbeat for {now - each.beat_at:.0f} s "
                f"(limit {limit:.0f} s): it"))

    def _check_frozen(self, *, now: float) -> None:
        """The leader ended unfinished (its collective timed out, say) while another
        process had gone quiet, no heartbeat for several periods: that one hung (stopped,
        or holding the GIL), and the leader's end is its consequence, whichever of the
        collective's timeout and the stall watch came first."""
        ended = self.leader.ended
        if self.kill is not None or ended is None or ended.exit in FINISHED:
            return
        quiet_s = max(2 * POLL_S, min(QUIET_BEATS * self.heartbeat_s,
                                      self.stall.limits.floor_s / 2))
        each = quiet_follower(self.processes, now=now, after_s=quiet_s)
        if each is not None:
            self._hung(each, now=now, limit_s=quiet_s, opening=(
                f"the leader ended ({ended.detail}) while process {each.index} had sent no "
                f"heartbeat for {now - each.beat_at:.0f} s: that one"))

    def _hung(self, each: _Process, *, now: float, limit_s: float, opening: str) -> None:
        """Process ``each`` hung, silent for ``limit_s`` or more at ``now`` (``opening``
        says how it was seen): say so, have every process dump its stacks, kill them all."""
        step = self.stall.last.step if self.stall.last is not None else 0
        stall = Stall(silent_s=now - each.beat_at, limit_s=limit_s, phase=self.stall.phase,
                      step=step)
        self.console.warn(f"{opening} looks hung (stopped, or holding the GIL); the thread "
                          f"stacks of the {len(self.processes)} processes follow")
        self.dump_stacks()
        self.kill_all(Kill(KillReason.HUNG, f"process {each.index} {stall.detail()}"))

    def dump_stacks(self) -> None:
        """Have every worker dump its thread stacks (each into its own file), then show
        them on the console and in the job log."""
        asked = [(each, self.log / stacks_name(each.index)) for each in self.processes]
        offsets = [each.worker.ask_for_stacks(path) for each, path in asked]
        if all(offset is None for offset in offsets):
            return
        self.clock.sleep(STACKS_WAIT_S)
        stopped = [each for each in self.processes if is_stopped(each.worker.pid)]
        if stopped:  # SIGSTOPped: they answer once continued, after the others are killed
            for each in self.processes:  # (so that training cannot go on meanwhile)
                if each not in stopped and each.worker.is_running():
                    each.killed = True
                    each.worker.kill()
            for each in stopped:
                each.worker.resume()
            self.clock.sleep(STACKS_WAIT_S)
        for (each, path), offset in zip(asked, offsets, strict=True):
            stacks = None if offset is None else read_stacks(path, offset)
            said = stacks_said(stacks, each.index, path.name, grouped=self.grouped)
            if said is not None:
                self.console.info(said)

    # -- ending them ------------------------------------------------------------------

    def kill_all(self, kill: Kill) -> None:
        """Kill every worker, for ``kill``'s reason (the first reason given stands)."""
        self.kill = self.kill or kill
        self._kill_workers()

    def _kill_workers(self) -> None:
        for each in self.processes:
            each.killed = each.killed or each.worker.is_running()
            each.worker.kill()

    def reap(self) -> None:
        """Kill those still running (the supervisor stops watching them), and wait for
        every one to exit."""
        if self.running():
            self.kill_all(Kill.because(KillReason.SUPERVISOR_STOPPED))
        for each in self.processes:
            each.worker.wait()

    def finish(self) -> None:
        """Once all exited (:meth:`reap`): take what they sent last, see their exits, and
        close their sockets."""
        while self.receive(timeout=0):
            pass
        self.check_exits()
        for each in self.processes:
            each.worker.close()

    def verdict(self) -> Outcome | tuple[Ended, int]:
        """How the attempt ended, as its processes show it (:func:`verdict_of`)."""
        return verdict_of(self.processes, kill=self.kill, lost=self.lost)

    def micro_batches(self) -> int | None:
        """The most micro-batches any process reported in its :class:`Ended`
        (:func:`largest_micro_batches`)."""
        return largest_micro_batches(self.processes)


def verdict_of(processes: list[_Process], *, kill: Kill | None,
               lost: _Process | None) -> Outcome | tuple[Ended, int]:
    """How an attempt ended, as its processes show it (none of them failed to start). In a
    group: the leader's :class:`Ended` when it finished (completed, stopped, fenced); else
    a process lost (crashed) or a hang; else the :class:`Ended` that names the cause
    (:func:`cause_of`), else the leader's crash.

    Args:
        processes: the attempt's processes, the leader first.
        kill: why the supervisor killed them, if it did.
        lost: the first process that exited on its own without an :class:`Ended`.

    Returns:
        The outcome, or the :class:`Ended` it is made of and its process's index.
    """
    leader, grouped = processes[0], len(processes) > 1
    reason = kill.reason if kill is not None else None
    ended = leader.ended
    if ended is not None and (not grouped or ended.exit in FINISHED):
        return ended, 0
    if reason is KillReason.INTERRUPTED_TWICE:
        return Outcome(Exit.STOPPED, "interrupted twice: stopped at once, without a save",
                       exit_code=130)
    if lost is not None:
        return crashed(lost, grouped=grouped)
    if kill is not None and reason is KillReason.HUNG:
        return Outcome(Exit.HUNG, kill.detail)
    cause = cause_of(processes)
    if cause is not None and cause.ended is not None:
        return cause.ended, cause.index
    return crashed(leader, grouped=grouped)


def cause_of(processes: list[_Process]) -> _Process | None:
    """The process whose :class:`Ended` says why a group ended unfinished: one that ran out
    of CUDA memory (any process's OOM is the attempt's: it restarts with more
    micro-batches); else one whose own code failed, the leader first; else one that lost
    its group (a crash: the consequence of another's end), the leader first. ``None`` when
    none ended unfinished."""
    unfinished = [each for each in processes
                  if each.ended is not None and each.ended.exit not in FINISHED]
    own = [each for each in unfinished
           if each.ended is not None and each.ended.exit is not Exit.CRASHED]
    oom = [each for each in own if each.ended is not None and each.ended.exit is Exit.OOM]
    return next(iter(oom + own + unfinished), None)


def largest_micro_batches(processes: list[_Process]) -> int | None:
    """The most micro-batches any of ``processes`` reported in its :class:`Ended` (each
    runs the same split); ``None`` when none sent one."""
    return max((each.ended.micro_batches for each in processes if each.ended is not None),
               default=None)


def crashed(each: _Process, *, grouped: bool) -> Outcome:
    """A worker died: how (``was killed by SIGKILL``), and in a group which process."""
    code = each.worker.returncode
    how = (f"was killed by {signal_name(-code)}" if code < 0
           else f"exited with code {code}")
    return Outcome(Exit.CRASHED, f"process {each.index} {how}" if grouped else how)


def stacks_said(stacks: str | None, index: int, name: str, *, grouped: bool) -> str | None:
    """What the console says of the stacks process ``index`` dumped into ``log/{name}``
    (``None``: it could not); ``None`` when it says nothing (one process that wrote none)."""
    if not grouped:
        return None if stacks is None else f"thread stacks of the hung worker:\n{stacks}"
    if stacks:
        return f"thread stacks of process {index} (log/{name}):\n{stacks}"
    return (f"process {index} wrote no thread stacks to log/{name} (it exited, or did not "
            "answer in time)")


def quiet_follower(processes: list[_Process], *, now: float,
                   after_s: float) -> _Process | None:
    """The first process other than the leader still on (it neither ended nor exited) that
    has sent no heartbeat for ``after_s`` seconds at ``now``; ``None`` when none has."""
    return next((each for each in processes[1:] if each.ended is None and not each.exited
                 and now - each.beat_at >= after_s), None)


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port of ``host`` that nothing listens on now, for a group's c10d store.

    The port is free only when this returns: another program could take it before the
    leader's store listens on it (its rendezvous then fails, and the attempt with it).

    Args:
        host: the address to find a port on.

    Returns:
        The port's number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _prefixed(text: str, prefix: str) -> str:
    """``text`` with ``prefix`` before each of its lines."""
    return "\n".join(prefix + line for line in text.split("\n"))


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
