"""Tier 1: a save's snapshot and how it is written, decided and taken in memory."""

from __future__ import annotations

import pytest
import torch

from colabrun.runner.save.capture import SaveContext, checkpoint_meta, take_snapshot
from colabrun.runner.save.snapshot import FORK, HostBuffers
from colabrun.runner.save.task import PROCESS, THREAD


def trained() -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    return model


def test_a_copy_into_shared_buffers_is_written_by_the_writer_process() -> None:
    model = trained()
    rng = {"torch": torch.get_rng_state()}
    snapshot = take_snapshot({"model": model}, {"rng": rng}, requested="copy",
                             buffers=HostBuffers(shared=True), can_fork=True)
    assert snapshot.mode == PROCESS and snapshot.ready is None
    assert snapshot.nbytes == (3 * 2 + 2) * 4, "the tracked state's tensors"
    weight = snapshot.payload["tracked"]["model"]["weight"]
    assert torch.equal(weight, model.weight.detach())
    assert weight.data_ptr() != model.weight.data_ptr(), "a copy"
    assert torch.equal(snapshot.payload["rng"]["torch"], rng["torch"]), "the RNG copied too"
    assert {id(p) for p in snapshot.gradients_of} == {id(p) for p in model.parameters()}, (
        "a writer process forked for this save drops its copy of the gradients")


def test_a_fork_reads_the_live_tensors_and_lets_go_of_their_gradients() -> None:
    model = trained()
    snapshot = take_snapshot({"model": model}, {}, requested="fork",
                             buffers=HostBuffers(shared=True), can_fork=True)
    assert snapshot.mode == FORK
    assert snapshot.payload["tracked"]["model"]["weight"].data_ptr() == model.weight.data_ptr()
    assert [id(p) for p in snapshot.gradients_of] == [id(p) for p in model.parameters()]


@pytest.mark.parametrize("requested", ["auto", "fork", "copy"])
def test_without_a_safe_fork_a_thread_writes_a_copy(requested: str) -> None:
    model = trained()
    snapshot = take_snapshot({"model": model}, {}, requested=requested,
                             buffers=HostBuffers(shared=False), can_fork=False)
    assert snapshot.mode == THREAD
    weight = snapshot.payload["tracked"]["model"]["weight"]
    assert weight.data_ptr() != model.weight.data_ptr()


def test_the_manifest_meta_says_where_why_and_what() -> None:
    context = SaveContext(where="in_epoch", extras={"best": 0.5}, metrics={"val": 0.25})
    meta = checkpoint_meta({"optimizer": trained(), "model": trained()}, "every_steps",
                           context, stamp={"seed": 3, "spec_fingerprint": "abc"})
    assert meta == {"where": "in_epoch", "reason": "every_steps", "extras": {"best": 0.5},
                    "tracked": ["model", "optimizer"], "seed": 3, "spec_fingerprint": "abc",
                    "torch_version": torch.__version__, "metrics": {"val": 0.25}}
    assert list(meta) == ["where", "reason", "extras", "tracked", "seed", "spec_fingerprint",
                          "torch_version", "metrics"], "the order manifests always had, then new"
