"""Asynchronous saves: the snapshot (copy into host buffers, or none for a fork), the
background writer in each of its three modes, and whole runs that save that way and resume exactly.

Pure tests first (the mode decision, the host buffers), then the writer on a real
store in a tmp folder, then in-process runs interrupted by an exception, then
real SIGKILLs of a forking writer's training process (slow).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from colabrun import runner
from colabrun.jobs.errors import CheckpointError, TrainingError
from colabrun.jobs.spec import CheckpointPolicy, JobSpec
from colabrun.runner.clock import FakeClock, SystemClock
from colabrun.runner.display.console import Console
from colabrun.runner.faults import CountPoints, InjectedFault, RaiseAt
from colabrun.runner.save.capture import SaveContext
from colabrun.runner.save.saver import Saver
from colabrun.runner.save.snapshot import (
    COPY,
    FORK,
    FORK_MIN_BYTES,
    HostBuffers,
    choose_mode,
    live_state,
    parameters_with_gradients,
    tensor_stats,
)
from colabrun.runner.save.task import (
    PROCESS,
    THREAD,
    SaveTask,
    WriteStats,
    fork_available,
    writer_mode,
)
from colabrun.runner.save.writer import Committed, Writer
from colabrun.runner.train.position import Position
from colabrun.state.checkpoints import SAVE_POINTS, CheckpointStore
from colabrun.state.jobdir import JobDir
from colabrun.state.lease import Fence, Owner, fence_of, take
from colabrun.state.manifest import Manifest
from colabrun.state.model import Status
from colabrun.state.statefile import StateFile
from colabrun.state.storage import Storage
from colabrun.state.transitions import new_job
from tests.helpers import (
    REPO,
    assert_exactly_equal,
    digits_spec,
    final_payload,
    run_cli,
    write_spec_file,
)
from tests.rng_heavy_job import train as rng_heavy_train
from tests.runner.test_crash_sweep import NAME as SWEEP_NAME
from tests.runner.test_crash_sweep import _newest_verifying

needs_fork = pytest.mark.skipif(not fork_available(), reason="the fork writer is Linux-only")
ALL_MODES = [THREAD, pytest.param(PROCESS, marks=needs_fork), pytest.param(FORK, marks=needs_fork)]
CHILD_MODES = [pytest.param(PROCESS, marks=needs_fork), pytest.param(FORK, marks=needs_fork)]

# -- choose_mode: a pure decision ---------------------------------------------------------

BIG = FORK_MIN_BYTES * 4


@pytest.mark.parametrize(
    ("requested", "nbytes", "cuda", "can_fork", "expected"),
    [
        pytest.param("fork", BIG, True, True, "copy", id="cuda-fork-requested"),
        pytest.param("auto", BIG, True, True, "copy", id="cuda-auto-big"),
        pytest.param("fork", 10, False, False, "copy", id="no-fork-fork-requested"),
        pytest.param("auto", BIG, False, False, "copy", id="no-fork-auto-big"),
        pytest.param("copy", BIG, False, True, "copy", id="copy-requested-big"),
        pytest.param("fork", 10, False, True, "fork", id="fork-requested-small"),
        pytest.param("fork", 0, False, True, "fork", id="fork-requested-empty"),
        pytest.param("auto", 0, False, True, "copy", id="auto-empty"),
        pytest.param("auto", FORK_MIN_BYTES - 1, False, True, "copy", id="auto-just-below"),
        pytest.param("auto", FORK_MIN_BYTES, False, True, "copy", id="auto-big-rewritten"),
        pytest.param("auto", BIG, False, True, "copy", id="auto-bigger-rewritten"),
    ],
)
def test_choose_mode(requested: str, nbytes: int, cuda: bool, can_fork: bool,
                     expected: str) -> None:
    assert choose_mode(requested, nbytes=nbytes, on_cuda=cuda, can_fork=can_fork) == expected


def test_tensor_stats_walk_nested_state() -> None:
    state = {"a": torch.zeros(3, dtype=torch.float64), "b": [torch.zeros(2, dtype=torch.int8),
                                                               (torch.zeros(1), 7)], "c": "x"}
    assert tensor_stats(state) == (3 * 8 + 2 * 1 + 4, False)


def test_live_state_does_not_copy() -> None:
    model = torch.nn.Linear(2, 2)
    state = live_state({"model": model})
    assert state["model"]["weight"].data_ptr() == model.weight.data_ptr()


# -- HostBuffers ----------------------------------------------------------------------------


def _ptrs(snapshot: dict[str, Any]) -> dict[str, int]:
    return {key: value.data_ptr() for key, value in snapshot["model"].items()}


def test_a_second_snapshot_reuses_the_buffers_and_holds_the_new_values() -> None:
    model = torch.nn.Linear(3, 2)
    buffers = HostBuffers()
    first, ready = buffers.snapshot({"model": model.state_dict()})
    assert ready is None, "CPU copies are synchronous: nothing to wait for"
    ptrs = _ptrs(first)
    assert ptrs["weight"] != model.weight.data_ptr(), "a snapshot is a copy"
    assert buffers.nbytes == tensor_stats(model.state_dict())[0]
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(-3.0)
    second, _ = buffers.snapshot({"model": model.state_dict()})
    assert _ptrs(second) == ptrs, "the same host buffers, no new allocation"
    assert torch.equal(second["model"]["weight"], model.weight.detach())
    assert torch.equal(second["model"]["bias"], model.bias.detach())
    assert buffers.nbytes == tensor_stats(model.state_dict())[0], "no buffer added"


def test_a_snapshot_ignores_later_changes_to_its_source() -> None:
    model = torch.nn.Linear(4, 3)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot, _ = HostBuffers().snapshot({"model": model.state_dict()})
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.bias.zero_()
    assert_exactly_equal(snapshot["model"], expected)


def test_a_shape_or_dtype_change_reallocates_the_buffer() -> None:
    buffers = HostBuffers()
    first, _ = buffers.snapshot({"m": {"x": torch.ones(2, 3)}})
    second, _ = buffers.snapshot({"m": {"x": torch.full((4, 3), 2.0)}})
    assert second["m"]["x"].shape == (4, 3) and torch.equal(second["m"]["x"],
                                                            torch.full((4, 3), 2.0))
    assert second["m"]["x"].data_ptr() != first["m"]["x"].data_ptr()
    assert torch.equal(first["m"]["x"], torch.ones(2, 3)), "the old snapshot is left alone"
    third, _ = buffers.snapshot({"m": {"x": torch.full((4, 3), 3, dtype=torch.float64)}})
    assert third["m"]["x"].dtype == torch.float64
    assert torch.equal(third["m"]["x"], torch.full((4, 3), 3, dtype=torch.float64))
    assert buffers.nbytes == 4 * 3 * 8, "the replaced buffers are dropped"


def test_a_live_parameter_is_copied_outside_autograd() -> None:
    """A forked writer's view, or a user's own state_dict(keep_vars=True), hands the
    snapshot parameters that require gradients: their copies must not."""
    model = torch.nn.Linear(3, 2)
    snapshot, _ = HostBuffers().snapshot({"m": {"w": model.weight, "b": [model.bias]}})
    for copied in (snapshot["m"]["w"], snapshot["m"]["b"][0]):
        assert not copied.requires_grad and copied.grad_fn is None
    assert torch.equal(snapshot["m"]["w"], model.weight.detach())


def test_a_transposed_tensor_keeps_its_values() -> None:
    source = torch.arange(12.0).reshape(3, 4).t()
    snapshot, _ = HostBuffers().snapshot({"m": {"x": source}})
    assert torch.equal(snapshot["m"]["x"], source)


def test_an_expanded_tensor_can_be_snapshotted() -> None:
    """A stride-0 (expanded) tensor in a state_dict: ``torch.save`` and the former
    ``.to("cpu", copy=True)`` snapshot handle it; a buffer allocated with the same
    strides overlaps itself and ``copy_`` into it raises."""
    source = torch.arange(4.0).reshape(1, 4).expand(3, 4)
    snapshot, _ = HostBuffers().snapshot({"m": {"mask": source}})
    assert torch.equal(snapshot["m"]["mask"], source)


class Pair(NamedTuple):
    first: torch.Tensor
    second: list[int]


def test_non_tensor_leaves_are_deep_copies_with_their_types() -> None:
    groups: list[dict[str, Any]] = [
        {"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.99), "names": ["w", "b"]}]
    state: dict[str, Any] = {"opt": {"param_groups": groups, "pair": Pair(torch.ones(2), [3]),
                                     "note": "hi"}}
    snapshot, _ = HostBuffers().snapshot(state)
    copied = snapshot["opt"]
    assert copied["param_groups"] == groups and copied["param_groups"] is not groups
    assert copied["param_groups"][0]["params"] is not groups[0]["params"]
    assert isinstance(copied["param_groups"][0]["betas"], tuple)
    assert isinstance(copied["pair"], Pair) and copied["pair"].second == [3]
    groups[0]["params"].append(2)
    groups[0]["lr"] = 9.0
    state["opt"]["pair"].second.append(4)
    assert copied["param_groups"][0]["params"] == [0, 1] and copied["param_groups"][0]["lr"] == 0.1
    assert copied["pair"].second == [3]


def _sgd_pair(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _sgd_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 3, generator=generator), torch.randn(5, 1, generator=generator)
    optimizer.zero_grad()
    torch.autograd.backward(torch.nn.functional.mse_loss(model(x), y))
    optimizer.step()


def test_an_optimizer_state_round_trips_through_the_buffers_and_a_file() -> None:
    model, optimizer = _sgd_pair(0)
    for seed in (1, 2):
        _sgd_step(model, optimizer, seed)
    buffers = HostBuffers()
    buffers.snapshot({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    _sgd_step(model, optimizer, 3)  # the buffers are reused: the second snapshot counts
    snapshot, _ = buffers.snapshot({"model": model.state_dict(),
                                    "optimizer": optimizer.state_dict()})
    momentum = [v["momentum_buffer"] for v in snapshot["optimizer"]["state"].values()]
    assert momentum and all(isinstance(m, torch.Tensor) for m in momentum)
    file = io.BytesIO()
    torch.save(snapshot, file)
    file.seek(0)
    loaded = torch.load(file, weights_only=True)  # as the store loads it
    model2, optimizer2 = _sgd_pair(99)
    model2.load_state_dict(loaded["model"])
    optimizer2.load_state_dict(loaded["optimizer"])
    assert_exactly_equal(optimizer2.state_dict(), optimizer.state_dict())
    for seed in (4, 5):  # momentum restored: the next steps agree bit for bit
        _sgd_step(model, optimizer, seed)
        _sgd_step(model2, optimizer2, seed)
    assert_exactly_equal(model2.state_dict(), model.state_dict())


@pytest.mark.gpu
def test_cuda_tensors_are_copied_into_pinned_buffers_asynchronously() -> None:
    source = torch.randn(256, 256, device="cuda")
    snapshot, ready = HostBuffers().snapshot({"m": {"x": source}})
    assert ready is not None, "device copies are asynchronous: the writer must wait"
    ready()
    assert snapshot["m"]["x"].is_pinned() and snapshot["m"]["x"].device.type == "cpu"
    assert torch.equal(snapshot["m"]["x"], source.cpu())


# -- the Writer, on a real store ------------------------------------------------------------


def _task(step: int, payload: dict[str, Any] | None = None) -> SaveTask:
    return SaveTask(payload if payload is not None else {"w": torch.arange(6.0) * step},
                    step=step, epoch=0, batch=step, generation=1, created_at=float(step),
                    meta={"reason": "test"})


class _Committed:
    """Records what the writer reports as committed."""

    def __init__(self) -> None:
        self.calls: list[tuple[Manifest, WriteStats]] = []

    def __call__(self, manifest: Manifest, stats: WriteStats) -> None:
        self.calls.append((manifest, stats))


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    """A local staging store, as :class:`colabrun.state.jobdir.JobDir` makes it."""
    return CheckpointStore(tmp_path / "local", Storage(timeout_s=None))


NewWriter = Callable[[Committed], Writer]


@pytest.fixture
def new_writer(store: CheckpointStore) -> Iterator[NewWriter]:
    """Writers on ``store``, closed (their thread ended) after the test."""
    made: list[Writer] = []

    def make(on_committed: Committed) -> Writer:
        made.append(Writer(store, on_committed=on_committed))
        return made[-1]

    yield make
    for writer in made:
        writer.wait(10)
        writer.close()


def _entries(store: CheckpointStore) -> list[str]:
    return sorted(os.listdir(store.dir)) if store.dir.exists() else []


#: shared buffers of the tasks handed to writer processes, one set per writer
_SHARED: dict[int, HostBuffers] = {}


def _as_submitted(writer: Writer, task: SaveTask, mode: str) -> SaveTask:
    """``task`` as a save in ``mode`` hands it over: for a writer process, its
    tensors copied into shared buffers (the same ones for every save of a writer)."""
    if mode != PROCESS:
        return task
    buffers = _SHARED.setdefault(id(writer), HostBuffers(shared=True))
    tensors = {k: v for k, v in task.payload.items() if isinstance(v, torch.Tensor)}
    copied, _ = buffers.snapshot({"payload": tensors})
    return dataclasses.replace(task, payload={**task.payload, **copied["payload"]},
                               buffers=buffers)


def _submit_and_wait(writer: Writer, task: SaveTask, mode: str) -> None:
    writer.submit(_as_submitted(writer, task, mode), mode=mode)
    assert writer.wait(30), "the save never finished"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_writer_commits_a_checkpoint_that_verifies(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    committed = _Committed()
    writer = new_writer(committed)
    _submit_and_wait(writer, _task(3), mode)
    writer.raise_error()
    assert store.list_names() == ["step-000000003-g0001"]
    manifest = store.verify("step-000000003-g0001")
    assert (manifest.step, manifest.batch, manifest.meta) == (3, 3, {"reason": "test"})
    assert_exactly_equal(store.load_payload(manifest.name), {"w": torch.arange(6.0) * 3})
    [(reported, stats)] = committed.calls
    assert reported == manifest and stats.mode == mode
    assert stats.write_s > 0
    assert not [n for n in _entries(store) if n.startswith(".tmp-")]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_writer_is_busy_while_a_save_is_in_flight(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    reached, release = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        if point == "save.payload_written":
            reached.set()
            release.wait(10)

    store.on_point = hold
    writer = new_writer(_Committed())
    assert not writer.busy
    writer.submit(_as_submitted(writer, _task(1), mode), mode=mode)
    try:
        assert reached.wait(10), "the save never reached its payload"
        assert writer.busy
        assert not writer.wait(0.05), "wait() times out while the save is held"
        assert store.list_names() == [], "nothing committed yet"
    finally:
        release.set()
    assert writer.wait(10) and not writer.busy
    writer.raise_error()
    assert store.list_names() == ["step-000000001-g0001"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_an_error_in_the_commit_is_raised_once_and_commits_nothing(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    committed = _Committed()
    store.on_point = RaiseAt("save.payload_written")
    writer = new_writer(committed)
    _submit_and_wait(writer, _task(1), mode)
    with pytest.raises(InjectedFault):
        writer.raise_error()
    writer.raise_error()  # once only
    assert store.list_names() == [] and committed.calls == []
    assert all(n.startswith(".tmp-") for n in _entries(store)) and len(_entries(store)) <= 1
    _submit_and_wait(writer, _task(2), mode)  # the writer is usable again
    writer.raise_error()
    assert store.list_names() == ["step-000000002-g0001"]
    store.verify("step-000000002-g0001")


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_child_writers_hooks_run_in_the_parent_in_order(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    seen: list[tuple[str, int]] = []
    store.on_point = lambda point: seen.append((point, os.getpid()))
    committed = _Committed()
    writer = new_writer(committed)
    _submit_and_wait(writer, _task(1), mode)
    writer.raise_error()
    assert [point for point, _ in seen] == list(SAVE_POINTS)
    assert {pid for _, pid in seen} == {os.getpid()}, "a hook runs in the training process"
    [(_, stats)] = committed.calls
    assert stats.mode == mode and stats.cpu_s > 0
    if mode == FORK:
        assert stats.child_max_rss > 0


@needs_fork
def test_a_fork_writer_writes_memory_as_it_was_at_the_fork(
    store: CheckpointStore, new_writer: NewWriter
) -> None:
    """The child reads the live tensors copy-on-write: changing them in place after
    ``submit`` (training goes on) does not reach the checkpoint."""
    held, release = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        if point == "save.folder_created":
            held.set()
            release.wait(10)

    store.on_point = hold
    live = torch.arange(1000.0)
    writer = new_writer(_Committed())
    writer.submit(_task(1, {"w": live}), mode=FORK)
    try:
        assert held.wait(10), "the child never started"
        live.mul_(-1.0)  # the next optimizer step, while the child writes
    finally:
        release.set()
    assert writer.wait(30)
    writer.raise_error()
    assert torch.equal(store.load_payload("step-000000001-g0001")["w"], torch.arange(1000.0))


def test_parameters_with_gradients_are_found_once_through_modules_and_optimizers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert parameters_with_gradients({"model": model, "optimizer": optimizer}) == []
    model(torch.ones(1, 2)).sum().backward()
    model[1].bias.grad = None
    found = parameters_with_gradients({"model": model, "optimizer": optimizer})
    assert [id(p) for p in found] == [id(p) for p in list(model.parameters())[:3]]
    assert [id(p) for p in parameters_with_gradients({"optimizer": optimizer})] == [
        id(p) for p in found]


def _mark_released(path: Path) -> None:
    path.write_text(str(os.getpid()))


@needs_fork
def test_a_fork_writer_lets_go_of_the_gradients_and_the_parent_keeps_them(
    store: CheckpointStore, new_writer: NewWriter, tmp_path: Path
) -> None:
    """Pages the child maps stay allocated after the parent frees them: the child
    drops the gradients (no checkpoint holds them) as soon as it starts."""
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.full((4,), 2.0)
    marker = tmp_path / "released"
    weakref.finalize(param.grad, _mark_released, marker)  # runs where the grad is freed
    writer = new_writer(_Committed())
    writer.submit(dataclasses.replace(_task(1, {"w": param.detach()}), gradients_of=[param]),
                  mode=FORK)
    assert writer.wait(30)
    writer.raise_error()
    assert marker.exists(), "the child kept the gradient"
    assert int(marker.read_text()) != os.getpid()
    assert param.grad is not None and torch.equal(param.grad, torch.full((4,), 2.0))


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise ValueError("this object refuses to be pickled")


class _DiesWhenPickledInAChild:
    """Pickled in the forked writer, it SIGKILLs the writer (an OOM kill, say)."""

    def __init__(self, parent: int) -> None:
        self.parent = parent

    def __reduce__(self) -> Any:
        if os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("pickled in the test process: this test needs the fork mode")


def _first_checkpoint(store: CheckpointStore, writer: Writer, mode: str = FORK) -> bytes:
    _submit_and_wait(writer, _task(1), mode)
    writer.raise_error()
    return (store.dir / "step-000000001-g0001" / "state.pt").read_bytes()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_payload_that_cannot_be_serialised_fails_the_save(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    writer = new_writer(_Committed())
    _submit_and_wait(writer, _task(1), mode)
    writer.raise_error()
    _submit_and_wait(writer, _task(2, {"w": torch.ones(2), "bad": _Unpicklable()}), mode)
    with pytest.raises(ValueError, match="refuses to be pickled"):
        writer.raise_error()
    assert store.list_names() == ["step-000000001-g0001"], "the previous one is intact"
    store.verify("step-000000001-g0001")


@needs_fork
def test_a_fork_writer_that_dies_fails_the_save_and_keeps_the_previous(
    store: CheckpointStore, new_writer: NewWriter
) -> None:
    committed = _Committed()
    writer = new_writer(committed)
    before = _first_checkpoint(store, writer)
    _submit_and_wait(writer, _task(2, {"w": torch.ones(2),
                                       "x": _DiesWhenPickledInAChild(os.getpid())}), FORK)
    with pytest.raises(CheckpointError, match="died"):
        writer.raise_error()
    assert store.list_names() == ["step-000000001-g0001"] and len(committed.calls) == 1
    store.verify("step-000000001-g0001")
    assert (store.dir / "step-000000001-g0001" / "state.pt").read_bytes() == before
    _submit_and_wait(writer, _task(3), FORK)  # and the next save works
    writer.raise_error()
    assert sorted(store.list_names()) == ["step-000000001-g0001", "step-000000003-g0001"]


@pytest.mark.parametrize("mode", CHILD_MODES)
def test_a_child_writer_killed_while_its_parent_runs_a_hook_fails_the_save(
    store: CheckpointStore, new_writer: NewWriter, mode: str
) -> None:
    """The child dies (the OOM killer, say) while the parent runs a point's hook: the
    save fails with the writer's own error, the previous checkpoint is intact, and
    the next save works (a writer process is forked anew)."""
    psutil = pytest.importorskip("psutil")
    writer = new_writer(_Committed())
    others = {p.pid for p in psutil.Process().children()}
    _first_checkpoint(store, writer, mode)
    if mode == FORK:  # a writer process outlives its save; a forked writer does not
        others = {p.pid for p in psutil.Process().children()}

    def kill_the_writer(point: str) -> None:
        if point != "save.payload_written":
            return
        [child] = [p for p in psutil.Process().children() if p.pid not in others]
        child.kill()
        deadline = time.monotonic() + 10
        while child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.005)

    store.on_point = kill_the_writer
    _submit_and_wait(writer, _task(2), mode)
    with pytest.raises(CheckpointError, match="died"):
        writer.raise_error()
    assert store.list_names() == ["step-000000001-g0001"]
    store.verify("step-000000001-g0001")
    store.on_point = lambda point: None
    _submit_and_wait(writer, _task(3), mode)
    writer.raise_error()
    assert sorted(store.list_names()) == ["step-000000001-g0001", "step-000000003-g0001"]


@needs_fork
def test_every_mode_reports_the_cpu_a_write_used(
    store: CheckpointStore, new_writer: NewWriter
) -> None:
    """``WriteStats.cpu_s`` (reported in the benchmarks) counts a write's CPU in both
    modes: they do the same work (serialise, hash, fsync), and a thread's ``thread_time``
    would miss work done in other threads, such as a timed storage call's."""
    committed = _Committed()
    writer = new_writer(committed)
    payload = {"w": torch.randn(8 * 2**20)}  # 32 MiB: ~0.1 s of CPU to save and hash
    _submit_and_wait(writer, _task(1, payload), FORK)
    _submit_and_wait(writer, _task(2, payload), THREAD)
    _submit_and_wait(writer, _task(3, payload), PROCESS)
    writer.raise_error()
    (_, fork_stats), (_, thread_stats), (_, process_stats) = committed.calls
    assert fork_stats.cpu_s > 0.02, fork_stats
    assert thread_stats.cpu_s >= fork_stats.cpu_s / 4, (thread_stats, fork_stats)
    assert process_stats.cpu_s >= fork_stats.cpu_s / 4, (process_stats, fork_stats)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_writer_keeps_the_newest_local_checkpoints_and_the_one_uploading(
    store: CheckpointStore, mode: str
) -> None:
    uploading: list[str | None] = [None]
    writer = Writer(store, on_committed=_Committed(), keep=2, protected=lambda: uploading[0])
    try:
        for step in (1, 2, 3):
            _submit_and_wait(writer, _task(step), mode)
        assert sorted(store.list_names()) == ["step-000000002-g0001", "step-000000003-g0001"]
        uploading[0] = "step-000000002-g0001"  # a slow upload of an older one
        for step in (4, 5):
            _submit_and_wait(writer, _task(step), mode)
        writer.raise_error()
        assert sorted(store.list_names()) == ["step-000000002-g0001", "step-000000004-g0001",
                                              "step-000000005-g0001"]
    finally:
        writer.close()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_writes_duration_is_measured_on_the_injected_clock(
    store: CheckpointStore, mode: str
) -> None:
    """The writer times a save on the clock it is given: 1.5 s pass, on a fake clock,
    while the save sits at a point (whose hook runs in this process, whatever the mode)."""
    clock = FakeClock()

    def slow_disk(point: str) -> None:
        if point == "save.payload_written":
            clock.advance(1.5)

    store.on_point = slow_disk
    committed = _Committed()
    writer = Writer(store, on_committed=committed, clock=clock)
    try:
        _submit_and_wait(writer, _task(1), mode)
        writer.raise_error()
    finally:
        writer.close()
    [(_, stats)] = committed.calls
    assert stats.mode == mode and stats.write_s == 1.5


def _owned_job(tmp_path: Path) -> tuple[StateFile, Fence]:
    """A job's state file under ``tmp_path / "job"``, leased to this process."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    statefile = StateFile(job_dir, Storage())
    state = take(new_job(name="job", fingerprint="f", defining={}, epochs_total=1, now=0.0),
                 Owner("runtime", "vm", os.getpid()), now=time.time(), duration_s=600)
    statefile.write(state)
    return statefile, fence_of(state)


def test_a_save_snapshots_the_objects_and_records_where_and_why(tmp_path: Path) -> None:
    statefile, fence = _owned_job(tmp_path)
    local = CheckpointStore(tmp_path / "local", Storage(timeout_s=None))
    root = CheckpointStore(tmp_path / "job", Storage())
    saver = Saver(local, root, statefile, keep_last=3, fence=fence, clock=SystemClock(),
                  stamp={"seed": 7, "spec_fingerprint": "f"})
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    context = SaveContext(where="in_epoch", extras={"best": 1.0},
                          state={"rng": {"torch": torch.get_rng_state()}})
    try:
        receipt = saver.save({"model": model}, Position(epoch=1, batch=4, step=9),
                             "every_steps", context=context)
        with torch.no_grad():
            model.weight.add_(1.0)  # training goes on: the snapshot keeps what it took
        assert saver.finish(30) and saver.is_durable
    finally:
        saver.close()
    assert receipt.name == "step-000000009-g0001" and receipt.stall_s > 0
    assert receipt.started_writer == fork_available(), "the first copy forks a writer process"
    manifest = root.verify(receipt.name)
    assert (manifest.step, manifest.epoch, manifest.batch) == (9, 1, 4)
    assert manifest.meta == {"where": "in_epoch", "reason": "every_steps",
                             "extras": {"best": 1.0}, "tracked": ["model"], "seed": 7,
                             "spec_fingerprint": "f", "torch_version": torch.__version__,
                             "metrics": {}}
    payload = root.load_payload(receipt.name)
    assert torch.equal(payload["tracked"]["model"]["weight"], before)
    assert torch.equal(payload["rng"]["torch"], context.state["rng"]["torch"])


def test_each_upload_records_and_rotates_in_one_state_write(tmp_path: Path) -> None:
    statefile, fence = _owned_job(tmp_path)
    counter = CountPoints()
    statefile = StateFile(tmp_path / "job", Storage(), on_point=counter)
    local = CheckpointStore(tmp_path / "local", Storage(timeout_s=None))
    root = CheckpointStore(tmp_path / "job", Storage())
    saver = Saver(local, root, statefile, keep_last=1, fence=fence, clock=SystemClock(),
                  stamp={"seed": 7, "spec_fingerprint": "f"})
    model = torch.nn.Linear(2, 2)
    names = []
    try:
        for step in (10, 20, 30):
            names.append(saver.save({"model": model}, Position(epoch=0, batch=step, step=step),
                                    "every_steps").name)
            assert saver.finish(30) and saver.is_durable
    finally:
        saver.close()
    # on Drive each state write is a round trip: the rotation rides on the upload's record
    assert counter.counts.get("state.replaced") == 3
    state = statefile.read()
    assert state is not None and [c.name for c in state.checkpoints] == names[-1:]
    assert root.list_names() == names[-1:], "the rotated folders are deleted"


def test_only_a_checkpoint_left_by_an_earlier_process_is_verified_as_it_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads: list[tuple[str, bool]] = []
    upload_from = CheckpointStore.upload_from

    def spy(self: CheckpointStore, source: CheckpointStore, name: str, *,
            verify_source: bool = True) -> Manifest:
        uploads.append((name, verify_source))
        return upload_from(self, source, name, verify_source=verify_source)

    monkeypatch.setattr(CheckpointStore, "upload_from", spy)
    statefile, fence = _owned_job(tmp_path)
    local = CheckpointStore(tmp_path / "local", Storage(timeout_s=None))
    leftover = local.commit({"tracked": {}}, step=5, epoch=0, batch=5, generation=0,
                           created_at=0.0, meta={}).name  # an earlier process's, not uploaded
    root = CheckpointStore(tmp_path / "job", Storage())
    saver = Saver(local, root, statefile, keep_last=3, fence=fence, clock=SystemClock(),
                  stamp={"seed": 7, "spec_fingerprint": "f"})
    try:
        saver.upload_later(leftover)
        assert saver.finish(30)
        fresh = saver.save({"model": torch.nn.Linear(2, 2)},
                           Position(epoch=1, batch=0, step=9), "every_steps").name
        assert saver.finish(30) and saver.is_durable
    finally:
        saver.close()
    assert uploads == [(leftover, True), (fresh, False)]


@pytest.mark.parametrize(
    ("snapshot", "shared", "cuda", "nbytes", "expected"),
    [
        pytest.param(FORK, True, False, 10, FORK, id="fork"),
        pytest.param(COPY, True, False, 10, PROCESS, id="copy-shared"),
        pytest.param(COPY, True, False, FORK_MIN_BYTES * 4, PROCESS, id="copy-big"),
        pytest.param(COPY, True, True, 10, THREAD, id="copy-cuda"),
        pytest.param(COPY, False, False, 10, THREAD, id="copy-no-fork"),
    ],
)
def test_writer_mode(snapshot: str, shared: bool, cuda: bool, nbytes: int,
                     expected: str) -> None:
    buffers = HostBuffers(shared=shared)
    assert writer_mode(snapshot, on_cuda=cuda, buffers=buffers) == expected


def test_shared_buffers_are_named_by_position_and_change_layout_only_when_allocated() -> None:
    buffers = HostBuffers(shared=True)
    first, _ = buffers.snapshot({"m": {"w": torch.ones(3), "empty": torch.zeros(0)}})
    assert buffers.layout == 1, "an empty tensor needs no shared buffer"
    assert buffers.key_of(first["m"]["w"]) == ("m", "w")
    assert buffers.key_of(first["m"]["empty"]) is None
    assert buffers.key_of(torch.ones(3)) is None, "not one of the buffers"
    second, _ = buffers.snapshot({"m": {"w": torch.full((3,), 2.0), "empty": torch.zeros(0)}})
    assert buffers.layout == 1 and second["m"]["w"] is first["m"]["w"]
    third, _ = buffers.snapshot({"m": {"w": torch.ones(4), "empty": torch.zeros(0)}})
    assert buffers.layout == 2 and buffers.key_of(third["m"]["w"]) == ("m", "w")
    assert buffers.key_of(first["m"]["w"]) is None, "a replaced buffer is no longer named"


def _children() -> set[int]:
    psutil = pytest.importorskip("psutil")
    return {p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE}


@needs_fork
def test_one_writer_process_serves_every_save_until_the_buffers_change(
    store: CheckpointStore
) -> None:
    before = _children()
    committed = _Committed()
    writer = Writer(store, on_committed=committed, keep=3)
    buffers = HostBuffers(shared=True)

    def save(step: int, **tensors: torch.Tensor) -> set[int]:
        snapshot, _ = buffers.snapshot({"p": tensors})
        writer.submit(dataclasses.replace(_task(step), payload=snapshot["p"], buffers=buffers),
                      mode=PROCESS)
        assert writer.wait(30)
        writer.raise_error()
        return _children() - before

    try:
        first = save(1, w=torch.full((4,), 1.0))
        assert len(first) == 1, "one writer process"
        assert save(2, w=torch.full((4,), 2.0)) == first, "the same one, reused"
        replaced = save(3, w=torch.full((4,), 3.0), b=torch.ones(2))  # a new tensor
        assert len(replaced) == 1 and replaced != first, "forked anew with the new buffer"
    finally:
        writer.close()
    assert _children() - before == set(), "close() ends it"
    for step in (1, 2, 3):  # each save wrote what its snapshot held when it was handed over
        assert torch.equal(store.load_payload(f"step-{step:09d}-g0001")["w"],
                           torch.full((4,), float(step)))
    assert [stats.mode for _, stats in committed.calls] == [PROCESS] * 3


@needs_fork
def test_a_writer_process_that_died_between_saves_is_replaced_silently(
    store: CheckpointStore, new_writer: NewWriter
) -> None:
    before = _children()
    writer = new_writer(_Committed())
    _first_checkpoint(store, writer, PROCESS)
    [pid] = _children() - before
    os.kill(pid, signal.SIGKILL)  # the OOM killer, between two saves
    deadline = time.monotonic() + 10
    while pid in _children() and time.monotonic() < deadline:
        time.sleep(0.01)
    _submit_and_wait(writer, _task(2), PROCESS)
    writer.raise_error()  # no error: a new writer process took the save
    assert sorted(store.list_names()) == ["step-000000001-g0001", "step-000000002-g0001"]


@needs_fork
def test_a_writer_process_sends_non_shared_tensors_by_value(
    store: CheckpointStore, new_writer: NewWriter
) -> None:
    """Tensors outside the shared buffers (an RNG state captured on the spot, a sparse
    tensor) travel inside the task, pickled."""
    writer = new_writer(_Committed())
    sparse = torch.eye(3).to_sparse()
    task = _as_submitted(writer, _task(1), PROCESS)
    payload = {**task.payload, "rng": torch.get_rng_state(), "sparse": sparse}
    writer.submit(dataclasses.replace(task, payload=payload), mode=PROCESS)
    assert writer.wait(30)
    writer.raise_error()
    loaded = store.load_payload("step-000000001-g0001")
    assert torch.equal(loaded["w"], torch.arange(6.0))
    assert torch.equal(loaded["rng"], payload["rng"])
    assert torch.equal(loaded["sparse"].to_dense(), torch.eye(3))


#: ``python -c`` this, FOLDER: save once through a writer process, print its pid, then
#: SIGKILL this process (the runtime's death) while the writer process idles
KILL_AFTER_A_PROCESS_SAVE = """
import os, signal, sys
import psutil, torch
from pathlib import Path
from colabrun.runner.save.snapshot import HostBuffers
from colabrun.runner.save.task import PROCESS, SaveTask
from colabrun.runner.save.writer import Writer
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.storage import Storage
store = CheckpointStore(Path(sys.argv[1]), Storage(timeout_s=None))
writer = Writer(store, on_committed=lambda manifest, stats: None)
buffers = HostBuffers(shared=True)
payload, _ = buffers.snapshot({"w": torch.ones(3)})
writer.submit(SaveTask(payload, step=1, epoch=0, batch=1, generation=1, created_at=0.0,
                       meta={}, buffers=buffers), mode=PROCESS)
assert writer.wait(30)
writer.raise_error()
print(*[child.pid for child in psutil.Process().children()], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
@needs_fork
def test_a_writer_process_dies_with_its_parent(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_A_PROCESS_SAVE, str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    [pid] = [int(word) for word in killed.stdout.split()]
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert not alive, "the writer process outlived the training process"
    assert CheckpointStore(tmp_path, Storage()).list_names() == ["step-000000001-g0001"]


# -- in-process runs that save in the background and resume exactly --------------------------

STEPS = 45  # tests/rng_heavy_job.py: 3 epochs of 15 batches


def async_spec(root: Path, snapshot: str, **checkpoint: Any) -> JobSpec:
    policy: dict[str, Any] = {"every_steps": 4, "every_s": None, "at_epoch_end": True,
                              "keep_last": 2, "snapshot": snapshot, "max_overhead": None,
                              **checkpoint}
    return JobSpec(name="heavy", entrypoint=rng_heavy_train, epochs=3, seed=3,
                   params={"lr": 0.01}, supervise=False, checkpoint=CheckpointPolicy(**policy),
                   root=str(root), local_dir=str(root / "local"))


def _run_restoring_determinism(spec: JobSpec, **options: Any) -> runner.RunResult:
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return runner.run(spec, **options)
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run, copying its snapshots."""
    root = tmp_path_factory.mktemp("reference")
    result = _run_restoring_determinism(async_spec(root, COPY))
    assert result.status is Status.COMPLETED and result.value == STEPS
    return final_payload(root / "heavy")


@pytest.fixture
def writer_modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The mode of every save the writer is handed."""
    modes: list[str] = []
    submit = Writer.submit

    def spy(self: Writer, task: SaveTask, *, mode: str) -> None:
        modes.append(mode)
        submit(self, task, mode=mode)

    monkeypatch.setattr(Writer, "submit", spy)
    return modes


@pytest.mark.parametrize(
    ("snapshot", "point", "nth"),
    [
        pytest.param("fork", "step", 23, id="fork-mid-epoch"),
        pytest.param("fork", "save.payload_written", 3, id="fork-mid-save", marks=needs_fork),
        pytest.param("fork", "save.renamed", 6, id="fork-after-commit", marks=needs_fork),
        pytest.param("copy", "step", 23, id="copy-mid-epoch"),
        pytest.param("copy", "save.payload_written", 3, id="copy-mid-save"),
    ],
)
def test_a_background_saving_run_resumes_exactly(
    tmp_path: Path, reference: dict[str, Any], writer_modes: list[str], snapshot: str,
    point: str, nth: int
) -> None:
    spec = async_spec(tmp_path, snapshot)
    with pytest.raises((InjectedFault, TrainingError)):
        runner.run(spec, on_point=RaiseAt(point, nth))
    state = StateFile(tmp_path / "heavy", Storage()).read()
    assert state is not None and state.progress.global_step < STEPS
    result = runner.run(spec)
    assert result.status is Status.COMPLETED and result.value == STEPS
    assert_exactly_equal(final_payload(tmp_path / "heavy"), reference)
    expected = (FORK if snapshot == "fork" else PROCESS) if fork_available() else THREAD
    assert len(writer_modes) >= 5 and set(writer_modes) == {expected}


# -- a corrupted newest checkpoint, loaded in the background -------------------------------

#: what the training function saw before it tracked anything, one entry per run
SEEN: list[dict[str, Any]] = []
FIRST_READ = ["extras"]


def observing_train(run: Any) -> float:
    """Reads where the run resumes before ``run.track``, then trains the heavy job."""
    seen: dict[str, Any] = {}
    for name in (FIRST_READ[0], "extras", "global_step", "epoch", "resumed"):
        value = getattr(run, name)
        seen[name] = dict(value) if isinstance(value, dict) else value
    SEEN.append(seen)
    return rng_heavy_train(run)


def observed_spec(root: Path, epochs: int = 3) -> JobSpec:
    return async_spec(root, "auto", keep_last=10).model_copy(
        update={"entrypoint": observing_train, "epochs": epochs})


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(the root of the job trained for 2 of its 3 epochs, with every upload waited
    for; the final state of a run of all 3 epochs at once)."""
    reference_root = tmp_path_factory.mktemp("observed-reference")
    SEEN.clear()
    result = _run_restoring_determinism(observed_spec(reference_root))
    assert result.status is Status.COMPLETED and result.value == STEPS
    assert SEEN == [{"extras": {}, "global_step": 0, "epoch": 0, "resumed": False}]
    root = tmp_path_factory.mktemp("observed")
    result = _run_restoring_determinism(observed_spec(root, epochs=2))  # raised to 3 below
    assert result.status is Status.COMPLETED and result.global_step == 30
    return root, final_payload(reference_root / "heavy")


@pytest.fixture
def first_read(request: pytest.FixtureRequest) -> Iterator[str]:
    FIRST_READ[0] = request.param
    yield request.param
    FIRST_READ[0] = "extras"


@pytest.mark.parametrize("first_read", ["extras", "global_step"], indirect=True)
def test_a_corrupted_newest_checkpoint_falls_back_in_the_background(
    tmp_path: Path, observed: tuple[Path, dict[str, Any]], first_read: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    template, final = observed
    root = tmp_path / "root"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("local"))
    spec = observed_spec(root)
    job = JobDir(root, "heavy", local_root=root / "local")
    state = job.statefile.read()
    assert state is not None and len(state.checkpoints) >= 2
    newest, previous = sorted(state.checkpoints, key=lambda r: r.step)[-2:][::-1]
    payload = job.store.dir / newest.name / "state.pt"
    data = bytearray(payload.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    payload.write_bytes(bytes(data))  # same size: only the sha256 can tell
    assert job.store.check_size(newest.name) == "size ok"
    shutil.rmtree(job.local.dir.parent, ignore_errors=True)  # a fresh runtime: only the
    assert not job.local.dir.exists()  # root's copies (a finished job left none anyway)

    loaded_in: list[str] = []
    load_verified = CheckpointStore.load_verified

    def spy(self: CheckpointStore, name: str, **kwargs: Any) -> Any:
        loaded_in.append(threading.current_thread().name)
        return load_verified(self, name, **kwargs)

    monkeypatch.setattr(CheckpointStore, "load_verified", spy)
    out = io.StringIO()
    SEEN.clear()
    result = _run_restoring_determinism(spec, console=Console(out=out))
    assert result.status is Status.COMPLETED and result.value == STEPS
    printed = out.getvalue()
    assert f"WARNING: skipping checkpoint {newest.name}: state.pt fails its sha256 check" \
        in printed
    assert f"resuming from {previous.name} " in printed
    assert loaded_in and loaded_in[0] == "colabrun-resume", "loaded in the background"
    assert SEEN == [{"extras": {"noise_draws": previous.step}, "global_step": previous.step,
                     "epoch": previous.epoch, "resumed": True}]
    assert_exactly_equal(final_payload(root / "heavy"), final)
    after = job.statefile.read()
    assert after is not None and newest.name not in [r.name for r in after.checkpoints]


def logging_train(run: Any) -> float:
    """Logs a metric before anything else (how long the setup took, say)."""
    run.log(setup_s=1.0)
    return rng_heavy_train(run)


def test_a_metric_logged_before_track_is_stamped_with_the_resumed_step(tmp_path: Path) -> None:
    """While the checkpoint still loads in the background, ``run.log`` must not stamp
    a resumed session's records with step 0 (as if it had started over)."""
    spec = async_spec(tmp_path, "auto").model_copy(update={"entrypoint": logging_train})
    with pytest.raises((InjectedFault, TrainingError)):
        _run_restoring_determinism(spec, on_point=RaiseAt("step", 23))
    result = _run_restoring_determinism(spec)
    assert result.status is Status.COMPLETED and result.value == STEPS
    state = StateFile(tmp_path / "heavy", Storage()).read()
    assert state is not None and len(state.sessions) == 2
    start = state.sessions[1].start_step
    assert start > 0, "the second session resumed"
    lines = (tmp_path / "heavy" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert [(r["session"], r["step"]) for r in records if "setup_s" in r] == [(0, 0), (1, start)]


# -- real SIGKILLs with a forking writer (slow) ------------------------------------------------

#: the points of a local commit ("save.committed", right after "save.renamed", leaves the
#: same files: left out to keep this under a minute)
SWEPT = ("save.payload_writing", "save.payload_written", "save.manifest_written", "save.renamed")
FORK_POLICY = {"every_steps": 10, "every_s": None, "at_epoch_end": True, "keep_last": 2,
               "snapshot": "fork", "max_overhead": None}
#: the thread where a local save's points reach the hook (whatever the writer's mode)
WRITER_THREADS = ("colabrun-writer",)

#: ``python -c`` this, SPEC POINT N THREAD...: run the spec; SIGKILL at the N-th pass of
#: POINT in a THREAD, i.e. by a local (forked) save, not by an upload, whose passes
#: interleave with the local ones unpredictably
KILL_IN_FORKED_SAVE = """
import os, signal, sys, threading
from colabrun import runner
spec, point, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = [0]
def hook(name):
    if name == point and threading.current_thread().name in sys.argv[4:]:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
runner.run(spec, on_point=hook)
"""


@pytest.fixture(scope="module")
def fork_reference(tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[dict[str, Any], dict[str, int]]:
    """An uninterrupted forking run's final state, and how often each point was passed
    by a local (forked) save."""
    root = tmp_path_factory.mktemp("fork-reference")
    passes: list[tuple[str, str]] = []
    modes: list[str] = []
    submit = Writer.submit

    def spy(self: Writer, task: SaveTask, *, mode: str) -> None:
        modes.append(mode)
        submit(self, task, mode=mode)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Writer, "submit", spy)
        mode = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            runner.run(digits_spec(root, name=SWEEP_NAME, checkpoint=FORK_POLICY),
                       on_point=lambda p: passes.append((p, threading.current_thread().name)))
        finally:
            torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    assert modes and set(modes) == {FORK}, "the sweep below must fork"
    local = {point: sum(1 for p, t in passes if p == point and t in WRITER_THREADS)
             for point in SWEPT}
    assert set(local.values()) == {len(modes)}, "each forked save passes each point once"
    return final_payload(root / SWEEP_NAME), local


def _writer_processes(marker: str) -> list[int]:
    """Processes still running the killed script (a forked writer that outlived it)."""
    psutil = pytest.importorskip("psutil")
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process.info["pid"])
    return found


@pytest.mark.slow
@needs_fork
@pytest.mark.parametrize("point", SWEPT)
def test_a_forking_run_killed_mid_save_resumes_exactly(
    tmp_path: Path, fork_reference: tuple[dict[str, Any], dict[str, int]], point: str
) -> None:
    final, local_passes = fork_reference
    nth = max(1, (local_passes[point] + 1) // 2)  # mid-run: after some checkpoints exist
    root = tmp_path / "runs"
    spec_file = write_spec_file(tmp_path / "spec.json",
                                digits_spec(root, name=SWEEP_NAME, checkpoint=FORK_POLICY))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_FORKED_SAVE, str(spec_file), point, str(nth),
         *WRITER_THREADS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    deadline = time.monotonic() + 5
    while _writer_processes(str(spec_file)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _writer_processes(str(spec_file)), "the forked writer died with its parent"

    job_dir = root / SWEEP_NAME
    job = JobDir(root, SWEEP_NAME, local_root=root.parent / "local")
    leftovers = [n for n in os.listdir(job.local.dir) if n.startswith(".tmp-")]
    if point == "save.renamed":  # committed locally, never uploaded
        assert not leftovers
        assert max(job.local.list_names()) > max(job.store.list_names(), default="")
    else:
        assert len(leftovers) == 1, "the kill hit the forked save, which left its folder"
    state = StateFile(job_dir, Storage()).read()
    assert state is not None, "the state file parses after the kill"
    for record in state.checkpoints:
        assert (job_dir / "checkpoints" / record.name / "manifest.json").exists()
    newest = _newest_verifying(root)
    assert newest is not None, "mid-run: checkpoints exist"
    resumed = run_cli("resume", SWEEP_NAME, "--root", str(root), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {newest} " in resumed.stdout, "the newest committed one"
    assert_exactly_equal(final_payload(job_dir), final)
