"""Virtual ranks: each rank's random stream, its piece of the joined batch, its weight."""

from __future__ import annotations

import random
from collections import namedtuple

import numpy as np
import pytest
import torch

from colabrun.jobs.errors import HandleError
from colabrun.runner.dist.group import Group
from colabrun.runner.dist.layout import Layout
from colabrun.runner.dist.streams import RankStreams, rank_seed
from colabrun.runner.dist.virtual import RankStates, VirtualRanks, join
from colabrun.runner.train import exactness
from colabrun.runner.train.exactness import InexactResume
from colabrun.runner.train.restore import RANKS, RNG, ranks_in, save_context
from colabrun.runner.train.rng import seed_everything, training_seed


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rank_0s_stream_is_a_one_rank_jobs_and_the_others_differ() -> None:
    assert rank_seed(5, 0) == training_seed(5)
    assert len({rank_seed(5, r) for r in range(8)}) == 8


def test_a_rank_draws_the_same_alone_or_as_a_virtual_rank() -> None:
    alone = RankStreams(range(1, 2))  # rank 1 in a process of its own
    alone.seed(3)
    first, second = draws(), draws()

    together = RankStreams(range(2))  # ranks 0 and 1 in one process
    together.seed(3)
    zero = draws()
    with together.of(1):
        assert draws() == first
    assert draws() != zero  # rank 0's stream went on where it was
    with together.of(1):
        assert draws() == second
    seed_everything(training_seed(3))  # rank 0 alone: the same as in the pair
    assert draws() == zero


def test_streams_saved_and_loaded_go_on_where_they_were() -> None:
    streams = RankStreams(range(2))
    streams.seed(1)
    with streams.of(1):
        draws()
    saved = streams.states()
    expected = (draws(), _in(streams, 1))
    streams.seed(99)
    streams.load(saved)
    assert (draws(), _in(streams, 1)) == expected


def _in(streams: RankStreams, rank: int) -> tuple[float, float, float]:
    with streams.of(rank):
        return draws()


def test_split_gives_each_rank_its_rows_its_stream_and_half_the_weight() -> None:
    streams = RankStreams(range(2))
    streams.seed(0)
    virtual = VirtualRanks(Layout(ranks=2), streams, Group(Layout(ranks=2)))
    parts = iter([(torch.zeros(3, 2), torch.zeros(3)), (torch.ones(2, 2), torch.ones(2))])
    batch = virtual.next_batch(parts)
    assert batch[0].shape == (5, 2)
    pieces = []
    for (x, _y), weight in virtual.split(batch, micro_batches=1):
        pieces.append((x.shape[0], float(x.mean()), weight, float(torch.rand(()))))
    assert [p[:3] for p in pieces] == [(3, 0.0, 0.5), (2, 1.0, 0.5)]
    alone = RankStreams(range(1, 2))
    alone.seed(0)
    assert pieces[1][3] == float(torch.rand(()))  # rank 1 drew from its own stream


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> VirtualRanks:
    """Ranks 0 and 1 in one process, seeded; the inexact-resume warnings said afresh."""
    monkeypatch.setattr(exactness, "_said", set())
    streams = RankStreams(range(2))
    streams.seed(0)
    return VirtualRanks(Layout(ranks=2), streams, Group(Layout(ranks=2)))


def test_split_cuts_each_rank_into_micro_batches_weighted_by_their_share(
    pair: VirtualRanks
) -> None:
    virtual = pair
    batch = virtual.next_batch(iter([torch.zeros(4), torch.ones(4)]))
    weights = [(float(x.sum()), w) for x, w in virtual.split(batch, micro_batches=2)]
    assert weights == [(0.0, 0.25), (0.0, 0.25), (2.0, 0.25), (2.0, 0.25)]
    other = torch.arange(6)  # not this step's batch: micro-batches only, and said
    with pytest.warns(InexactResume, match="another batch than run.batches"):
        assert [w for _, w in virtual.split(other, micro_batches=2)] == [0.5, 0.5]


def test_join_keeps_the_batch_structure() -> None:
    pair = namedtuple("pair", "x y")
    joined = join([pair(torch.zeros(1), {"m": torch.zeros(1)}),
                   pair(torch.ones(2), {"m": torch.ones(2)})])
    assert isinstance(joined, pair) and joined.x.tolist() == [0.0, 1.0, 1.0]
    assert joined.y["m"].shape == (3,)
    with pytest.raises(HandleError, match="cannot join"):
        join([["a"], ["b"]])


def test_a_checkpoint_keeps_every_ranks_stream_beside_rank_0s() -> None:
    streams = RankStreams(range(2, 4))  # process 1 of 2, ranks 2 and 3
    streams.seed(0)
    leader = RankStreams(range(2))
    leader.seed(0)
    gathered = RankStates.merged([RankStates.of(leader, None), RankStates.of(streams, None)])
    assert sorted(gathered.now) == [0, 1, 2, 3]
    context = save_context("epoch_start", extras={}, micro_batches=1, rng=gathered.now[0],
                           epoch_rng=None, rank_rng=gathered.now)
    saved = context.state[RNG]
    assert sorted(saved[RANKS]) == ["1", "2", "3"]
    assert set(ranks_in(saved, range(2, 4))) == {2, 3}
    one = save_context("epoch_start", extras={}, micro_batches=1, rng=gathered.now[0],
                       epoch_rng=None, rank_rng={0: gathered.now[0]})
    assert RANKS not in one.state[RNG]  # a job of one rank saves what it always did


def test_every_process_deals_the_same_batches_from_a_sampler_drawing_globally() -> None:
    """A WeightedRandomSampler draws from torch's global generator, which holds another
    rank's stream in each process: the epoch's batches are drawn from one shared instead."""
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    from colabrun.runner.train.data import remaining_batches

    data = TensorDataset(torch.arange(40.0))
    loader = DataLoader(data, batch_size=4,
                        sampler=WeightedRandomSampler([1.0] * 40, num_samples=40))
    dealt = []
    for rank in (0, 1):
        RankStreams(range(rank, rank + 1)).seed(rank + 3)  # each process's own stream
        mine = remaining_batches(loader, seed=1, epoch=0, skip=0, ranks=range(rank, rank + 1),
                                 world=2)
        dealt.append([batch[0].tolist() for batch in mine])
    together = remaining_batches(loader, seed=1, epoch=0, skip=0, ranks=range(2), world=2)
    joined = [batch[0].tolist() for batch in together]
    assert joined[0::2] == dealt[0] and joined[1::2] == dealt[1]


def test_a_ranks_cuda_stream_is_its_own_devices_and_goes_back_onto_this_processs(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated CUDA: process 1 of 2 trains on cuda:1; its rank's stream keeps cuda:1's
    state alone, and a 1-GPU runtime running that rank virtually puts it on cuda:0."""
    devices = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    current = {"device": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(devices.values()))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: devices[current["device"]])
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state: devices.__setitem__(current["device"], state))
    alone = RankStreams(range(1, 2), own_device=True)
    saved = alone.states()
    assert [t.tolist() for t in saved[1]["cuda"]] == [[1]]  # cuda:1's, not the list
    current["device"] = 0
    devices[0] = torch.tensor([7], dtype=torch.uint8)
    virtual = RankStreams(range(2), own_device=True)
    virtual.load({0: {**saved[1], "cuda": [torch.tensor([9], dtype=torch.uint8)]}, 1: saved[1]})
    assert devices[0].tolist() == [9]  # rank 0's onto this process's device
    with virtual.of(1):
        assert devices[0].tolist() == [1]  # rank 1's stream, now on cuda:0
    assert devices[0].tolist() == [9]


def test_split_of_a_copy_of_the_joined_batch_is_said_once(pair: VirtualRanks) -> None:
    virtual = pair
    batch = virtual.next_batch(iter([torch.zeros(2), torch.ones(2)]))
    with pytest.warns(InexactResume, match="another batch than run.batches"):
        pieces = list(virtual.split(batch.clone(), micro_batches=1))
    assert [w for _, w in pieces] == [1.0]
    assert [w for _, w in virtual.split(batch.clone(), micro_batches=1)] == [1.0]  # once
