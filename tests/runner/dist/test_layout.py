"""The pure plan of ranks and processes, and the spec's distributed section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from colabrun.jobs.spec import DistributedPolicy, JobSpec, changed_defining_fields
from colabrun.runner.dist.layout import (
    Layout,
    layout_change_problem,
    layout_problem,
    plan_layout,
    visible_gpus,
)
from colabrun.runner.train.data import shard_numbers


def test_each_process_runs_consecutive_ranks_and_rank_0_is_the_leaders() -> None:
    layout = Layout(ranks=4, processes=2)
    assert [list(layout.of_process(p).hosted) for p in range(2)] == [[0, 1], [2, 3]]
    assert layout.is_leader and not layout.of_process(1).is_leader
    assert layout.of_process(1).first_rank == 2 and layout.per_process == 2
    with pytest.raises(ValueError):
        Layout(ranks=3, processes=2)


@pytest.mark.parametrize(("ranks", "processes", "gpus", "device", "expected"), [
    (2, "auto", 0, "auto", (1, "gloo")),       # no GPU: virtual ranks in one process
    (2, "auto", 2, "auto", (2, "nccl")),       # Kaggle's two T4s
    (2, "auto", 1, "auto", (1, "nccl")),       # Colab's one GPU
    (4, "auto", 3, "auto", (2, "nccl")),       # the most processes that divide the ranks
    (2, "auto", 2, "cpu", (1, "gloo")),        # GPUs not used
    (2, 2, 0, "auto", (2, "gloo")),            # as asked
])
def test_auto_runs_one_process_per_gpu_that_divides_the_ranks(
    ranks: int, processes: int | str, gpus: int, device: str, expected: tuple[int, str]
) -> None:
    layout = plan_layout(DistributedPolicy(ranks=ranks, processes=processes), gpus=gpus,
                         device=device)
    assert (layout.processes, layout.backend) == expected


def test_gpus_are_counted_from_the_environment_then_the_driver(tmp_path: Path) -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, tmp_path) == 2
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path) == 0
    (tmp_path / "0000:00:04.0").mkdir()
    assert visible_gpus({}, tmp_path) == 1
    assert visible_gpus({}, tmp_path / "missing") == 0


def test_a_layout_change_is_refused_only_where_the_sum_order_changes() -> None:
    assert layout_change_problem(2, Layout(ranks=2, processes=1), allow_inexact=False) is None
    assert layout_change_problem(1, Layout(ranks=2, processes=2), allow_inexact=False) is None
    problem = layout_change_problem(4, Layout(ranks=4, processes=2), allow_inexact=False)
    assert problem is not None and "allow_inexact" in problem and "4 process(es)" in problem
    assert layout_change_problem(4, Layout(ranks=4, processes=2), allow_inexact=True) is None


def test_each_step_deals_one_batch_per_rank_and_drops_the_remainder() -> None:
    assert shard_numbers(7, skip=0, ranks=range(2), world=2) == [0, 1, 2, 3, 4, 5]
    assert shard_numbers(7, skip=1, ranks=range(1, 2), world=2) == [3, 5]
    assert shard_numbers(5, skip=2, ranks=range(1), world=1) == [2, 3, 4]


def test_the_spec_refuses_processes_that_do_not_divide_the_ranks_in_one_line() -> None:
    with pytest.raises(ValidationError, match="does not divide ranks: 3"):
        JobSpec(name="j", entrypoint="a.b:c", epochs=1,
                distributed={"ranks": 3, "processes": 2})
    with pytest.raises(ValidationError, match="needs supervise: true"):
        JobSpec(name="j", entrypoint="a.b:c", epochs=1, supervise=False,
                distributed={"ranks": 2, "processes": 2})
    with pytest.raises(ValidationError, match="not a number of processes"):
        JobSpec(name="j", entrypoint="a.b:c", epochs=1, distributed={"processes": 0})


def test_the_ranks_define_the_job_but_one_rank_keeps_its_old_fingerprint() -> None:
    one = JobSpec(name="j", entrypoint="a.b:c", epochs=1)
    assert "ranks" not in one.defining_fields()
    two = one.model_copy(update={"distributed": DistributedPolicy(ranks=2)})
    assert changed_defining_fields(one.defining_fields(), two) == ["distributed.ranks"]
    assert changed_defining_fields(two.defining_fields(), two) == []
    more = two.model_copy(update={"distributed": DistributedPolicy(ranks=2, processes=2)})
    assert more.fingerprint() == two.fingerprint()  # processes only say how


def test_two_ranks_cut_into_micro_batches_cannot_move_between_layouts_exactly() -> None:
    one = Layout(ranks=2, processes=1)
    problem = layout_change_problem(2, one, allow_inexact=False, micro_batches=2)
    assert problem is not None and "2 micro-batches since a CUDA OOM" in problem
    assert layout_change_problem(1, one, allow_inexact=False, micro_batches=2) is None
    assert layout_change_problem(2, one, allow_inexact=True, micro_batches=2) is None


@pytest.mark.parametrize(("ranks", "processes", "gpus", "device", "backend", "expected"), [
    (2, 2, 2, "auto", "auto", None),            # one NCCL process per GPU
    (2, 2, 0, "auto", "auto", None),            # gloo on the CPU
    (2, 2, 1, "auto", "gloo", None),            # gloo may share a GPU
    (2, 1, 0, "auto", "nccl", None),            # one process forms no group
    (2, 2, 1, "auto", "auto", "distributed.processes: 2 processes with NCCL need 2 GPUs, "
     "this runtime has 1: set processes: auto (1 process, 2 virtual ranks), or backend: gloo"),
    (4, 4, 2, "auto", "auto", "distributed.processes: 4 processes with NCCL need 4 GPUs, "
     "this runtime has 2: set processes: auto (2 processes of 2 virtual ranks each), or "
     "backend: gloo"),
    (2, 2, 0, "auto", "nccl", "this runtime has 0: set processes: auto (1 process"),
    (2, 2, 2, "cpu", "nccl", "2 GPUs, device: cpu trains on none: set processes: auto (1 "),
])
def test_more_nccl_processes_than_gpus_is_a_problem_said_in_one_line(
    ranks: int, processes: int, gpus: int, device: str, backend: str, expected: str | None
) -> None:
    policy = DistributedPolicy(ranks=ranks, processes=processes, backend=backend)
    problem = layout_problem(plan_layout(policy, gpus=gpus, device=device), gpus, device=device)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and "\n" not in problem


def test_an_error_of_the_group_is_told_from_the_training_functions_own() -> None:
    import torch

    from colabrun.jobs.errors import HandleError
    from colabrun.runner.dist.group import GroupError, is_group_failure

    peer = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
                        "[127.0.0.1]:6580: Connection reset by peer")
    assert is_group_failure(peer)
    assert is_group_failure(RuntimeError("Application timeout caused pair closure"))
    assert is_group_failure(GroupError("process 1 would resume from a, the leader from b"))
    assert is_group_failure(torch.distributed.DistNetworkError("port taken"))
    wrapped = ValueError("in the user's code")
    wrapped.__cause__ = peer
    assert is_group_failure(wrapped)
    assert not is_group_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_group_failure(HandleError("run.split(): cannot split a str"))
