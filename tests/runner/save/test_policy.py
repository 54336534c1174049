"""The adaptive save cadence (``checkpoint.max_overhead``): pure decisions, then one run.

A save costing ``c`` seconds of training time every ``T`` seconds costs
``c / (T + c)``; the policy waits ``T = c (1 - m) / m`` between saves, never saves
while the last one is still being written, and measures ``c`` with the first save
(:class:`colabrun.runner.save.policy.CostMeter`: the stall, plus the toll: the extra time of the
steps up to the next save over a typical step). Uploads are paced by the CPU they use.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from colabrun import runner
from colabrun.jobs.spec import CheckpointPolicy, JobSpec, KeepBest
from colabrun.runner.save.policy import (
    CostMeter,
    adaptive_interval_s,
    epoch_end_wanted,
    save_due,
)
from colabrun.runner.save.saver import Saver
from colabrun.state.manifest import Manifest
from colabrun.state.model import Status
from tests.helpers import assert_exactly_equal, final_payload
from tests.rng_heavy_job import train as rng_heavy_train

OVERHEADS = (0.001, 0.02, 0.1, 0.5, 0.9)
COSTS = (1e-4, 0.05, 1.0, 37.0, 600.0)


def adaptive(max_overhead: float | None = 0.1, **fields: Any) -> CheckpointPolicy:
    """Only the adaptive trigger, unless ``fields`` turn others on."""
    values: dict[str, Any] = {"every_steps": None, "every_s": None, "at_epoch_end": False,
                              "max_overhead": max_overhead, **fields}
    return CheckpointPolicy(**values)


# -- adaptive_interval_s ----------------------------------------------------------------------


@pytest.mark.parametrize(("m", "c"), list(itertools.product(OVERHEADS, COSTS)))
def test_the_interval_bounds_the_overhead_tightly(m: float, c: float) -> None:
    interval = adaptive_interval_s(m, c)
    assert interval >= 0
    assert c / (interval + c) <= m * (1 + 1e-9), "at the interval: at most max_overhead"
    assert c / (0.99 * interval + c) > m, "any sooner costs more: the interval is the least"


def test_the_interval_grows_with_the_cost_and_shrinks_with_the_allowance() -> None:
    assert adaptive_interval_s(0.02, 2.0) == pytest.approx(2 * adaptive_interval_s(0.02, 1.0))
    assert adaptive_interval_s(0.01, 1.0) > adaptive_interval_s(0.02, 1.0)
    assert adaptive_interval_s(0.02, 1.0) == pytest.approx(49.0)  # 1 s per 50 s
    assert adaptive_interval_s(0.5, 3.0) == pytest.approx(3.0)
    assert adaptive_interval_s(0.1, 0.0) == 0.0, "a free save may happen at every boundary"


# -- save_due with the adaptive trigger ------------------------------------------------------


def test_adaptive_is_due_once_the_interval_has_passed() -> None:
    policy = adaptive(0.1)
    interval = adaptive_interval_s(0.1, 2.0)  # 18 s
    due = [save_due(policy, steps_since_save=3, seconds_since_save=s, at_epoch_end=False,
                    save_cost_s=2.0) for s in (0.0, 1.0, interval * 0.999, interval,
                                                interval * 1.001, 10 * interval)]
    assert due == [None, None, None, "adaptive", "adaptive", "adaptive"]


@pytest.mark.parametrize("cost", [None, 0.0, 1.0])
def test_adaptive_waits_for_the_uploader_and_the_other_triggers_do_not(cost: float | None
                                                                        ) -> None:
    """Durable first: an adaptive save is taken when its upload can start at once, so the
    save interval is the upload's and a runtime's death loses at most about 1.5 of it."""
    due = {"steps_since_save": 100, "seconds_since_save": 1e6, "save_cost_s": cost}
    assert save_due(adaptive(), at_epoch_end=False, upload_ready=False, **due) is None
    assert save_due(adaptive(), at_epoch_end=False, upload_ready=True, **due) == "adaptive"
    assert save_due(adaptive(every_steps=10), at_epoch_end=False, upload_ready=False,
                    **due) == "every_steps", "what the spec asks for explicitly is kept"
    assert save_due(adaptive(at_epoch_end=True), at_epoch_end=True, upload_ready=False,
                    **due) == "epoch_end"


def test_adaptive_waits_for_the_meters_probe_and_the_other_triggers_do_not() -> None:
    due = {"steps_since_save": 100, "seconds_since_save": 1e6, "save_cost_s": 0.001}
    assert save_due(adaptive(), at_epoch_end=False, probing=True, **due) is None
    assert save_due(adaptive(), at_epoch_end=False, probing=False, **due) == "adaptive"
    assert save_due(adaptive(every_steps=10), at_epoch_end=False, probing=True,
                    **due) == "every_steps"
    assert save_due(adaptive(at_epoch_end=True), at_epoch_end=True, probing=True,
                    **due) == "epoch_end"


def test_the_default_policy_is_adaptive_at_two_percent() -> None:
    assert CheckpointPolicy().max_overhead == 0.02
    assert save_due(CheckpointPolicy(), steps_since_save=1, seconds_since_save=0.0,
                    at_epoch_end=False) == "adaptive", "the first save measures"


def test_adaptive_is_due_at_once_while_the_cost_is_unmeasured() -> None:
    """The first save of a session measures the cost: taken at the first step."""
    assert save_due(adaptive(), steps_since_save=1, seconds_since_save=0.0,
                    at_epoch_end=False, save_cost_s=None) == "adaptive"


@pytest.mark.parametrize("cost", [None, 0.0, 1.0])
def test_adaptive_never_saves_while_the_writer_is_busy(cost: float | None) -> None:
    assert save_due(adaptive(), steps_since_save=100, seconds_since_save=1e6,
                    at_epoch_end=False, save_cost_s=cost, writer_busy=True) is None
    assert save_due(adaptive(), steps_since_save=100, seconds_since_save=1e6,
                    at_epoch_end=False, save_cost_s=cost, writer_busy=False) == "adaptive"


@pytest.mark.parametrize("cost", [None, 0.0, 1.0])
@pytest.mark.parametrize("at_epoch_end", [False, True])
def test_adaptive_never_saves_without_a_new_step(cost: float | None, at_epoch_end: bool) -> None:
    """An epoch end with no new step is due only for the epoch-end trigger (off here)."""
    assert save_due(adaptive(), steps_since_save=0, seconds_since_save=1e6,
                    at_epoch_end=at_epoch_end, save_cost_s=cost) is None


def test_without_max_overhead_nothing_is_adaptive() -> None:
    policy = adaptive(None)
    assert save_due(policy, steps_since_save=5, seconds_since_save=1e6, at_epoch_end=False,
                    save_cost_s=None) is None


def test_the_other_triggers_still_win() -> None:
    due: dict[str, Any] = {"steps_since_save": 10, "seconds_since_save": 1e6,
                           "save_cost_s": None}
    assert save_due(adaptive(at_epoch_end=True), at_epoch_end=True, **due) == "epoch_end"
    assert save_due(adaptive(every_steps=10), at_epoch_end=False, **due) == "every_steps"
    assert save_due(adaptive(every_s=60.0), at_epoch_end=False, **due) == "every_s"
    # and they are not held back by a busy writer, as the adaptive trigger is
    assert save_due(adaptive(every_steps=10), at_epoch_end=False, writer_busy=True,
                    **due) == "every_steps"
    # when they are not due, the adaptive trigger still is
    assert save_due(adaptive(every_steps=50, every_s=1e7), at_epoch_end=False,
                    **due) == "adaptive"


# -- at_epoch_end: auto -----------------------------------------------------------------------


def test_auto_saves_at_the_end_of_an_epoch_as_long_as_the_adaptive_interval() -> None:
    """The digits example's epochs: 0.14 s each, saves of 5 ms at 2% (an interval of 0.245 s):
    no epoch end saves (each one did, which alone spent 3.8%); epochs of minutes all do."""
    policy = adaptive(0.02, at_epoch_end="auto")
    interval = adaptive_interval_s(0.02, 0.005)
    due = [epoch_end_wanted(policy, epoch_s=s, save_cost_s=0.005)
           for s in (0.14, interval - 1e-9, interval, 600.0)]
    assert due == [False, False, True, True]
    assert save_due(policy, steps_since_save=45, seconds_since_save=0.14, at_epoch_end=True,
                    save_cost_s=0.005, epoch_s=0.14) is None
    assert save_due(policy, steps_since_save=45, seconds_since_save=0.28, at_epoch_end=True,
                    save_cost_s=0.005, epoch_s=0.28) == "epoch_end"
    long_epochs = [epoch_end_wanted(policy, epoch_s=600.0, save_cost_s=c)
                   for c in (0.005, 1.0, 5.0)]
    assert long_epochs == [True, True, True], "epochs of minutes: every one"


def test_auto_ends_a_long_epoch_with_a_save_even_just_after_an_adaptive_one() -> None:
    """Epochs longer than the interval each end with a checkpoint, as with ``true``."""
    policy = adaptive(0.02, at_epoch_end="auto")
    assert save_due(policy, steps_since_save=3, seconds_since_save=0.01, at_epoch_end=True,
                    save_cost_s=0.005, epoch_s=60.0) == "epoch_end"


@pytest.mark.parametrize("fields", [
    {"max_overhead": None},
    {"keep_best": KeepBest(metric="val_loss")},
])
def test_auto_saves_every_epoch_without_a_budget_or_with_keep_best(fields: dict[str, Any]
                                                                   ) -> None:
    policy = adaptive(**{"max_overhead": 0.02, "at_epoch_end": "auto", **fields})
    assert epoch_end_wanted(policy, epoch_s=0.01, save_cost_s=5.0)


def test_auto_saves_the_first_epoch_end_before_any_cost_is_known() -> None:
    policy = adaptive(0.02, at_epoch_end="auto")
    assert epoch_end_wanted(policy, epoch_s=0.01, save_cost_s=None)


def test_auto_saves_a_long_epochs_end_with_no_step_since_the_last_save_as_true_does() -> None:
    """A loop that never calls ``run.step()``: its epoch ends are its only saves (the
    position moved to the next epoch), and no other trigger fires without a step."""
    policy = adaptive(0.02, at_epoch_end="auto", every_s=300.0)
    assert save_due(policy, steps_since_save=0, seconds_since_save=600.0, at_epoch_end=True,
                    save_cost_s=0.005, epoch_s=600.0) == "epoch_end"


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False)])
def test_true_and_false_ignore_the_budget(value: bool, expected: bool) -> None:
    policy = adaptive(0.02, at_epoch_end=value)
    for since in (0.0, 0.01, 1e6):
        assert epoch_end_wanted(policy, epoch_s=since, save_cost_s=5.0) is expected


def test_the_default_is_auto() -> None:
    assert CheckpointPolicy().at_epoch_end == "auto"


# -- CostMeter: what a save costs, measured from the loop ------------------------------------


def test_the_cost_is_unknown_until_the_first_save() -> None:
    meter = CostMeter()
    for _ in range(20):
        meter.observe_step(0.1)
    assert meter.cost_s is None
    meter.observe_save(0.25)
    assert meter.cost_s == pytest.approx(0.25), "the stall, in full; no toll measured yet"


def _meter_with(*, typical_s: float, slow_s: float, slow_steps: int, stall_s: float = 0.3
                ) -> CostMeter:
    """Typical steps, a save, ``slow_steps`` slowed steps while it is written, then
    typical ones, a save."""
    meter = CostMeter()
    for _ in range(30):
        meter.observe_step(typical_s)
    meter.observe_save(stall_s)
    for _ in range(slow_steps):
        meter.observe_step(slow_s, writing=True)
    for _ in range(20):
        meter.observe_step(typical_s)
    meter.observe_save(stall_s)
    return meter


def test_the_toll_is_the_extra_time_of_the_steps_between_saves() -> None:
    meter = _meter_with(typical_s=0.10, slow_s=0.15, slow_steps=4)
    assert meter.typical_step_s == pytest.approx(0.10)
    assert meter.toll_s == pytest.approx(4 * 0.05)
    assert meter.cost_s == pytest.approx(0.3 + 4 * 0.05), "stall plus toll"


def test_slow_steps_before_the_first_save_are_nobodys_toll() -> None:
    meter = CostMeter()
    for step_s in [0.1] * 10 + [0.2] * 3:  # warm-up
        meter.observe_step(step_s)
    meter.observe_save(0.01)
    assert meter.toll_s == 0.0


@pytest.mark.parametrize("slow_s", [0.10, 0.08])
def test_work_that_slows_nothing_costs_only_the_stall(slow_s: float) -> None:
    """A free core: steps are no slower (or noise makes them faster) after a save."""
    meter = _meter_with(typical_s=0.10, slow_s=slow_s, slow_steps=4)
    assert meter.toll_s == 0.0 and meter.cost_s == pytest.approx(0.3)


def test_noise_cancels_in_the_toll() -> None:
    """Steps scattered around the typical one add up to no toll: the sum is signed."""
    meter = CostMeter()
    for _ in range(30):
        meter.observe_step(0.1)
    meter.observe_save(0.01)
    for step_s in [0.09, 0.11] * 25:
        meter.observe_step(step_s)
    meter.observe_save(0.01)
    assert meter.toll_s == pytest.approx(0.0, abs=1e-9)


def test_only_the_steps_that_pay_for_a_save_are_its_toll() -> None:
    """Those that end while it is written, and the first few after it; not the rest."""
    meter = CostMeter(tail_steps=2, tail_s=None)
    for _ in range(30):
        meter.observe_step(0.1)
    meter.observe_save(0.01)
    for writing in (True, True, True, False, False, False, False):
        meter.observe_step(0.2, writing=writing)  # the last two: after the tail
    meter.observe_save(0.01)
    assert meter.toll_s == pytest.approx(5 * 0.1)


def test_a_machine_whose_speed_drifts_charges_no_save_for_it() -> None:
    """A shared VM slows by 30% for a while: the typical step follows, the saves are
    charged only for what their own steps cost beyond it. (A median over the whole
    run, or one frozen after a hundred steps, would charge the drift to the saves.)"""
    meter = CostMeter()
    for _ in range(150):
        meter.observe_step(0.1)
    for _ in range(60):
        meter.observe_step(0.13)  # the drift, between saves
    for _ in range(5):
        meter.observe_save(0.01)
        for step_s in (0.15, 0.13, 0.13, 0.13):  # the first: 0.02 s of writing
            meter.observe_step(step_s, writing=step_s == 0.15)
        for _ in range(40):
            meter.observe_step(0.13)
    assert meter.typical_step_s == pytest.approx(0.13)
    assert meter.toll_s == pytest.approx(0.02)


def test_a_long_step_is_not_taken_for_a_slow_one() -> None:
    """An epoch's evaluation or a GC pause (over 3x the typical step) is not a save's toll."""
    meter = _meter_with(typical_s=0.1, slow_s=5.0, slow_steps=1)
    assert meter.toll_s == 0.0


def test_a_save_that_started_the_writer_is_not_learned() -> None:
    """The save that forks the writer process stalls for the fork, and the steps after
    it pay the fork's copy-on-write faults: one-time costs. The meter starts over, so
    the next save (due at once, as the cost is unknown) measures."""
    meter = _meter_with(typical_s=0.10, slow_s=0.15, slow_steps=4)
    meter.observe_save(0.02, setup=True)
    assert meter.cost_s is None and meter.toll_s == 0.0
    for _ in range(3):
        meter.observe_step(0.9)  # copy-on-write faults after the fork (<= 3x typical...
    meter.observe_save(0.001)  # ...or not): never a save's toll
    assert meter.cost_s == pytest.approx(0.001), "the stall alone, as at a first save"
    for _ in range(20):
        meter.observe_step(0.12, writing=True)
    meter.observe_save(0.001)
    assert meter.toll_s == pytest.approx(20 * 0.02), "then the toll is measured again"


def test_the_stall_is_averaged_without_dropping_long_ones() -> None:
    """A long stall is a real cost (a bigger state): it must count, not be dropped."""
    meter = CostMeter(alpha=0.2)
    meter.observe_save(0.1)
    meter.observe_save(1.0)
    assert meter.stall_s == pytest.approx(0.8 * 0.1 + 0.2 * 1.0)


def test_the_toll_follows_the_saves() -> None:
    meter = CostMeter(alpha=0.5, tail_s=None)
    for _ in range(30):
        meter.observe_step(0.1)
    meter.observe_save(0.1)
    for slow_steps in (4, 2):
        for _ in range(slow_steps):
            meter.observe_step(0.2)
        meter.observe_save(0.1)
    assert meter.toll_s == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)


def test_a_slower_save_is_taken_less_often() -> None:
    """End to end through the pure parts: the measured cost sets the interval."""
    cheap = _meter_with(typical_s=0.1, slow_s=0.11, slow_steps=2, stall_s=0.01)
    dear = _meter_with(typical_s=0.1, slow_s=0.25, slow_steps=8, stall_s=0.01)
    assert cheap.cost_s is not None and dear.cost_s is not None
    cheap_s, dear_s = (adaptive_interval_s(0.02, m.cost_s) for m in (cheap, dear)
                       if m.cost_s is not None)
    assert dear_s > 10 * cheap_s
    policy = adaptive(0.02)
    at: dict[str, Any] = {"steps_since_save": 5, "at_epoch_end": False,
                          "seconds_since_save": cheap_s * 1.01}
    assert save_due(policy, save_cost_s=cheap.cost_s, **at) == "adaptive"
    assert save_due(policy, save_cost_s=dear.cost_s, **at) is None


# -- upload pacing -------------------------------------------------------------------------------


class Weights:
    """A tracked object holding one tensor."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.tensor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tensor = state["w"]


# -- one run with the adaptive cadence -----------------------------------------------------------


def _spec(root: Path, epochs: int = 3, **checkpoint: Any) -> JobSpec:
    policy = CheckpointPolicy(**{"every_steps": None, "every_s": None, "at_epoch_end": True,
                                 "keep_last": 2, "max_overhead": None, **checkpoint})
    return JobSpec(name="heavy", entrypoint=rng_heavy_train, epochs=epochs, seed=3,
                   params={"lr": 0.01}, supervise=False, checkpoint=policy,
                   root=str(root), local_dir=str(root / "local"))


def _runs_and_saves(monkeypatch: pytest.MonkeyPatch, *specs: JobSpec
                    ) -> list[tuple[Any, list[Manifest]]]:
    """Run each spec in this process: its result, and the checkpoints it committed (torch's
    deterministic mode, which a run sets, is put back after)."""
    committed: list[Manifest] = []
    on_committed = Saver._committed

    def spy(self: Saver, manifest: Manifest, stats: Any) -> None:
        committed.append(manifest)
        on_committed(self, manifest, stats)

    monkeypatch.setattr(Saver, "_committed", spy)
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    runs = []
    try:
        for spec in specs:
            committed.clear()
            runs.append((runner.run(spec), list(committed)))
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    return runs


def test_an_adaptive_run_saves_mid_epoch_and_trains_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (adaptive_result, adaptive_saves), (plain_result, committed) = _runs_and_saves(
        monkeypatch, _spec(tmp_path / "adaptive", max_overhead=0.5), _spec(tmp_path / "plain"))
    assert adaptive_result.status is Status.COMPLETED and adaptive_result.value == 45
    assert plain_result.status is Status.COMPLETED and plain_result.value == 45
    assert [m.meta["reason"] for m in committed] == ["epoch_end"] * 3, "no adaptive saves"

    reasons = [m.meta["reason"] for m in adaptive_saves]
    assert reasons.count("adaptive") >= 1, reasons
    first = adaptive_saves[0]
    assert (first.meta["reason"], first.step) == ("adaptive", 1), "the first measures the cost"
    assert all(m.step % 15 != 0 for m in adaptive_saves if m.meta["reason"] == "adaptive"), \
        "an epoch's last boundary is the epoch-end save's"
    assert [m.step for m in adaptive_saves if m.meta["reason"] == "epoch_end"] == [15, 30, 45]
    steps = [m.step for m in adaptive_saves]
    assert steps == sorted(set(steps)), "one save per step at most, in order"
    assert_exactly_equal(final_payload(tmp_path / "adaptive" / "heavy"),
                         final_payload(tmp_path / "plain" / "heavy"))


def test_auto_epoch_end_saves_of_short_epochs_stay_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epochs of a few milliseconds at ``max_overhead: 0.001`` (an interval of ~1000 saves'
    cost): most epoch ends save nothing under ``auto``, and the run trains the same."""
    (auto, saves), (plain, _) = _runs_and_saves(
        monkeypatch, _spec(tmp_path / "auto", epochs=12, at_epoch_end="auto", max_overhead=0.001),
        _spec(tmp_path / "plain", epochs=12))
    reasons = [m.meta["reason"] for m in saves]
    assert auto.status is Status.COMPLETED and plain.status is Status.COMPLETED
    assert reasons.count("epoch_end") <= 6, reasons
    assert_exactly_equal(final_payload(tmp_path / "auto" / "heavy"),
                         final_payload(tmp_path / "plain" / "heavy"))
