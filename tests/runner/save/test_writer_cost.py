"""What keeps a big save cheap for training (issue 19): ``auto`` picks a copy unless training
leaves most of the state as it is (a pure decision); every writer child keeps the training
process's CPU priority (read from the real child, while it waits at a save point) and its
payload, without zip CRC32s as every save's (tests/state/test_payload.py), loads; a writer
process frees its inherited view of the live state, and big copies go to one too."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy
import pytest
import torch

from colabrun.runner.clock import SystemClock
from colabrun.runner.save.capture import take_snapshot
from colabrun.runner.save.child import release_storages
from colabrun.runner.save.fork_writer import ForkWriter
from colabrun.runner.save.process_writer import ProcessWriter
from colabrun.runner.save.snapshot import (
    FORK_MAX_REWRITTEN_SHARE,
    FORK_MIN_BYTES,
    HostBuffers,
    choose_mode,
    frozen_bytes,
)
from colabrun.runner.save.task import PROCESS, LocalTarget, SaveTask, fork_available
from colabrun.state.checkpoints import CheckpointStore
from colabrun.state.storage import Storage

needs_fork = pytest.mark.skipif(not fork_available(), reason="writer children are Linux-only")
BIG = 4 * FORK_MIN_BYTES

# -- auto: copy unless training leaves most of a big state as it is ------------------------


@pytest.mark.parametrize(
    ("nbytes", "frozen", "expected"),
    [
        pytest.param(BIG, 0, "copy", id="all-rewritten"),
        pytest.param(BIG, int(BIG * (1 - FORK_MAX_REWRITTEN_SHARE)), "fork", id="half-frozen"),
        pytest.param(BIG, int(BIG * (1 - FORK_MAX_REWRITTEN_SHARE)) - 1, "copy",
                     id="just-under-half-frozen"),
        pytest.param(BIG, BIG, "fork", id="all-frozen"),
        pytest.param(BIG, 2 * BIG, "fork", id="frozen-over-counted"),
        pytest.param(FORK_MIN_BYTES - 1, FORK_MIN_BYTES - 1, "copy", id="small-all-frozen"),
    ],
)
def test_auto_forks_only_big_states_training_mostly_leaves_alone(
        nbytes: int, frozen: int, expected: str) -> None:
    assert choose_mode("auto", nbytes=nbytes, on_cuda=False, can_fork=True,
                       frozen_bytes=frozen) == expected


def test_requested_modes_ignore_what_is_frozen() -> None:
    assert choose_mode("fork", nbytes=BIG, on_cuda=False, can_fork=True, frozen_bytes=0) == "fork"
    assert choose_mode("copy", nbytes=BIG, on_cuda=False, can_fork=True,
                       frozen_bytes=BIG) == "copy"
    assert choose_mode("auto", nbytes=BIG, on_cuda=True, can_fork=True,
                       frozen_bytes=BIG) == "copy", "a child cannot read CUDA memory"


def test_frozen_bytes_counts_parameters_without_gradients_once() -> None:
    backbone, head = torch.nn.Linear(10, 10), torch.nn.Linear(10, 2)
    backbone.requires_grad_(False)
    model = torch.nn.Sequential(backbone, head)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    tracked = {"model": model, "backbone": backbone, "optimizer": optimizer}
    assert frozen_bytes(tracked) == (10 * 10 + 10) * 4, "backbone counted once"
    assert frozen_bytes({"optimizer": optimizer}) == 0


# -- a writer process frees its view of the live state -----------------------------------


def test_release_storages_frees_ordinary_storages_and_leaves_others() -> None:
    plain = torch.ones(1000)
    view = plain[10:20]
    shared = torch.ones(100).share_memory_()
    foreign = torch.from_numpy(numpy.ones(100, dtype="float32"))
    freed = release_storages([plain, view, shared, foreign])
    assert freed == 4000, "one storage freed once, however many views"
    assert plain.untyped_storage().nbytes() == 0
    assert shared.untyped_storage().nbytes() == 400 and foreign.untyped_storage().nbytes() == 400


def test_snapshot_hands_its_live_sources_over_once_and_big_copies_go_to_a_process() -> None:
    model = torch.nn.Linear(4, 4)
    model(torch.ones(1, 4)).sum().backward()
    buffers = HostBuffers(shared=True)
    snapshot = take_snapshot({"model": model}, {}, requested="copy", buffers=buffers,
                             can_fork=True)
    assert snapshot.mode == PROCESS
    assert {id(p) for p in snapshot.gradients_of} == {id(p) for p in model.parameters()}
    sources = buffers.take_sources()
    assert {t.data_ptr() for t in sources} == {p.data_ptr() for p in model.parameters()}
    assert buffers.take_sources() == [], "handed over once"


# -- the child's priority, read from the real child ------------------------------------------


def _children() -> list[int]:
    me = os.getpid()
    return [int(p) for tid in os.listdir(f"/proc/{me}/task")
            for p in Path(f"/proc/{me}/task/{tid}/children").read_text().split()]


def _policies_at_first_point(store: CheckpointStore, seen: list[int]) -> None:
    def on_point(name: str) -> None:
        if name == "save.folder_created":
            seen.extend(os.sched_getscheduler(pid) for pid in _children())
    store.on_point = on_point


def _task(payload: dict[str, object], buffers: HostBuffers | None = None) -> SaveTask:
    return SaveTask(payload, step=1, epoch=0, batch=1, generation=1, created_at=0.0, meta={},
                    buffers=buffers)


@needs_fork
def test_forked_writer_keeps_the_priority_and_its_crc_less_payload_loads(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, Storage())
    seen: list[int] = []
    _policies_at_first_point(store, seen)
    writer = ForkWriter(LocalTarget(store, 2, lambda: None), clock=SystemClock())
    task = _task({"w": torch.arange(6.0)})
    writer.begin(task)
    manifest, _ = writer.finish(task)
    assert seen == [os.sched_getscheduler(0)], "a writer at SCHED_IDLE starves on a busy CPU"
    payload = store.dir / manifest.name / "state.pt"
    loaded = torch.load(io.BytesIO(payload.read_bytes()), weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(6.0))


@needs_fork
def test_writer_process_keeps_the_training_priority(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, Storage())
    seen: list[int] = []
    _policies_at_first_point(store, seen)
    writer = ProcessWriter(LocalTarget(store, 2, lambda: None), clock=SystemClock())
    buffers = HostBuffers(shared=True)
    copied, _ = buffers.snapshot({"w": torch.arange(6.0)})
    task = _task(copied, buffers)
    try:
        assert writer.begin(task)
        manifest, _ = writer.finish(task)
    finally:
        writer.close()
    assert seen == [os.sched_getscheduler(0)], "a writer at SCHED_IDLE starves on a busy CPU"
    assert store.verify(manifest.name) == manifest


def _rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon for {pid}")


@needs_fork
def test_writer_process_frees_the_live_state_it_inherited(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, Storage())
    live = torch.nn.Linear(2048, 4096, bias=False)  # 32 MiB of parameters, in memory
    live.weight.grad = torch.ones_like(live.weight)  # 32 MiB more, dropped by the child
    anon: list[tuple[int, int]] = []

    def on_point(name: str) -> None:
        if name == "save.folder_created":
            anon.extend((_rss_anon(os.getpid()), _rss_anon(pid)) for pid in _children())
    store.on_point = on_point
    writer = ProcessWriter(LocalTarget(store, 2, lambda: None), clock=SystemClock())
    buffers = HostBuffers(shared=True)
    snapshot = take_snapshot({"model": live}, {}, requested="copy", buffers=buffers,
                             can_fork=True)
    task = SaveTask(snapshot.payload, step=1, epoch=0, batch=1, generation=1, created_at=0.0,
                    meta={}, buffers=buffers, gradients_of=snapshot.gradients_of)
    try:
        writer.begin(task)
        writer.finish(task)
    finally:
        writer.close()
    [(parent, child)] = anon
    assert child <= parent - 56 * 2**20, "the child keeps neither the weights nor the grads"
    assert live.weight.abs().sum() > 0 and live.weight.grad is not None, "the parent's intact"
