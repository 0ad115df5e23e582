"""Successive halving (known answers on synthetic scores) and tuning cut into jobs: per grid point and per rung the
selection, its flags and rows equal the one-job tuning's."""

from __future__ import annotations

import json

import pytest
import torch

from bayes_transfer.io import save_torch
from bayes_transfer.models.resnets import build_model
from bayes_transfer.stages import experiment, halving, selection, tuning

DIGITS = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}
SH = {"strategy": "successive_halving", "successive_halving": {"rungs": 3, "eta": 3, "min_steps": None}}


def test_rung_budgets_and_sizes():
    assert halving.rung_steps(900, 3, 3) == [100, 300, 900]
    assert halving.rung_steps(900, 3, 3, min_steps=50) == [50, 150, 900]
    assert halving.rung_steps(100, 3, 3) == [11, 33, 100]
    assert halving.rung_steps(100, 1, 3) == [100]
    assert halving.rung_sizes(8, 3, 3) == [8, 3, 1]
    assert halving.rung_sizes(56, 3, 3) == [56, 19, 7]
    assert halving.rung_sizes(2, 3, 2) == [2, 1, 1]
    assert halving.plan(8, 900, {"strategy": "grid"}) == [(900, 8)]
    assert halving.plan(8, 900, SH) == [(100, 8), (300, 3), (900, 1)]
    with pytest.raises(ValueError, match="tuning.strategy must be one of"):
        halving.plan(8, 900, {"strategy": "random"})
    with pytest.raises(ValueError, match="min_steps must be in 1..train.steps"):
        halving.rung_steps(100, 3, 3, min_steps=200)
    with pytest.raises(ValueError, match="eta >= 2"):
        halving.rung_steps(100, 3, 1)


def _synthetic(quality, calls, fail=()):
    """A fit whose validation NLL is the point's quality plus a bias that shrinks with the budget (the ranking is
    the same at every budget): nll = quality + 1 / steps."""

    def evaluate(i, steps, rung):
        calls.append((i, steps, rung))
        nll = quality[i] + 1.0 / steps
        return {"values": {"x": i}, "fitted": {"x": i}, "nll": nll, "error": nll, "accuracy": 1 - nll,
                "success": i not in fail}

    return evaluate


def test_halving_keeps_the_top_third_per_rung_and_returns_the_grids_best():
    quality = [0.9, 0.3, 0.5, 0.1, 0.7, 0.2, 0.8, 0.4, 0.6]  # best: 3, then 5, 1, 7
    calls = []
    best, rungs = halving.run_halving(9, _synthetic(quality, calls), "nll", halving.plan(9, 90, SH))
    assert [r["points"] for r in rungs] == [list(range(9)), [3, 5, 1], [3]]
    assert [r["steps"] for r in rungs] == [10, 30, 90]
    assert best["values"] == {"x": 3}
    grid_calls = []
    grid_best, _ = halving.run_halving(9, _synthetic(quality, grid_calls), "nll", halving.plan(9, 90, {}))
    assert grid_best["values"] == best["values"]
    # cost: 9 x 10 + 3 x 30 + 1 x 90 = 270 steps, against the grid's 9 x 90 = 810 (a third)
    assert halving.cost(rungs) == {"fits": 13, "steps": 270} and len(calls) == 13
    assert sum(steps for _i, steps, _r in grid_calls) == 810


def test_failed_points_are_never_promoted_and_ties_go_to_the_smaller_values():
    quality = [0.1, 0.1, 0.5, 0.6]
    _best, rungs = halving.run_halving(4, _synthetic(quality, [], fail={0}), "nll",
                                       halving.plan(4, 8, {"strategy": "successive_halving",
                                                           "successive_halving": {"rungs": 2, "eta": 2}}))
    assert rungs[1]["points"] == [1, 2]
    rows = [{"values": {"x": 2}, "nll": 1.0, "error": 0.1, "success": True},
            {"values": {"x": 1}, "nll": 1.0, "error": 0.1, "success": True}]
    assert halving.promote(rows, 1, "nll") == [1]
    assert selection.values_key({"b": 1, "a": 2.0}) == (("a", 2.0), ("b", 1.0))


def test_parts_cut_a_rung_into_jobs():
    assert tuning.parts(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert tuning.parts(1, 4) == [range(0, 1)]
    with pytest.raises(ValueError, match="points_per_job must be >= 1"):
        tuning.parts(3, 0)


def test_every_point_failed_is_no_selection():
    best, rungs = halving.run_halving(3, _synthetic([0.1, 0.2, 0.3], [], fail={0, 1, 2}), "nll",
                                      halving.plan(3, 9, SH))
    assert best is None and len(rungs) == 1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    save_torch({"state_dict": build_model("small_resnet", 5).state_dict()}, str(path))
    return str(path)


GRID = {"lr": [0.01, 0.05], "weight_decay": [0.0, 1e-2]}
TRAIN = {"steps": 6, "batch_size": 8, "log_every": 1}
TUNING = {"seed": 1000, "validation": "task", "score": "nll"}


def _setting(ckpt, tuning_cfg):
    return tuning.Tuning("sgd_transfer", "supervised", ckpt, None, DIGITS, {"arch": "small_resnet"}, TRAIN, GRID,
                         tuning_cfg)


def _same(a: dict, b: dict):
    """Equal tuning files up to the job's wall time and code version."""
    drop = ("wall_time_s", "code_version")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def _point_split(setting, n, tmp_path, per_job=1):
    """The jobs of tune_split: point, run one after another: the parts of each rung, its ranking, the selection."""
    rankings, ranking = [], None
    for r, (_steps, size) in enumerate(setting.schedule):
        slots = [str(tmp_path / f"rung{r}" / f"part{j}.json") for j in range(len(tuning.parts(size, per_job)))]
        for j, out in enumerate(slots):
            tuning.point_stage(setting, n, r, j, out, ranking, per_job)
        if r < len(setting.schedule) - 1:
            ranking = str(tmp_path / f"rung{r}.json")
            tuning.rung_stage(setting, r, slots, ranking)
            rankings.append(ranking)
    return json.loads(json.dumps(tuning.select_stage(setting, n, slots, str(tmp_path / "n10.json"), rankings)))


def test_grid_point_jobs_select_exactly_as_the_one_job_tuning(ckpt, tmp_path):
    (one,) = experiment.tune_stage("sgd_transfer", [10], "supervised", checkpoint=ckpt, prior_path=None,
                                   data_cfg=DIGITS, model_cfg={"arch": "small_resnet"}, train_cfg=TRAIN, grid=GRID,
                                   tuning_cfg=TUNING, outs=[str(tmp_path / "one.json")])
    split = _point_split(_setting(ckpt, TUNING), 10, tmp_path / "split")
    _same(split, json.loads(json.dumps(one)))
    assert len(split["grid"]) == 4 and "rungs" not in split
    _same(_point_split(_setting(ckpt, TUNING), 10, tmp_path / "pairs", per_job=3), split)


def test_halving_point_jobs_select_exactly_as_the_one_job_halving(ckpt, tmp_path):
    cfg = TUNING | {"strategy": "successive_halving", "successive_halving": {"rungs": 2, "eta": 2, "min_steps": 2}}
    setting = _setting(ckpt, cfg)
    assert setting.schedule == [(2, 4), (6, 2)]
    (one,) = tuning.tune_sizes(setting, [10], [str(tmp_path / "one.json")])
    split = _point_split(_setting(ckpt, cfg), 10, tmp_path / "split", per_job=2)
    _same(split, json.loads(json.dumps(one)))
    assert one["cost"] == {"fits": 6, "steps": 4 * 2 + 2 * 6} and len(one["grid"]) == 2
    assert [len(r["rows"]) for r in one["rungs"]] == [4, 2]
    assert one["selected_grid"] in [one["rungs"][0]["rows"][i]["values"] for i in range(4)]


def test_config_check_names_the_halving_problems():
    import yaml

    from bayes_transfer.config.check import ConfigError
    from bayes_transfer.config.experiments import merged
    from bayes_transfer.config.schema import SCHEMA_PATH, prepare_config

    base = yaml.safe_load((SCHEMA_PATH.parents[2] / "config.yaml").read_text())
    bad = merged(base, {"tuning": {"strategy": "successive_halving", "successive_halving": {"min_steps": 500},
                                   "grids": {"sgd_transfer": {"steps": [10, 100]}}}})
    with pytest.raises(ConfigError) as err:
        prepare_config(bad)
    assert "tuning.successive_halving.min_steps: expected at most train.steps (100), got 500" in err.value.problems
    assert any(p.startswith("tuning.grids.sgd_transfer.steps: successive halving") for p in err.value.problems)
    ok = prepare_config(merged(base, {"tuning": {"strategy": "successive_halving"}}))
    assert ok["tuning"]["successive_halving"] == {"rungs": 3, "eta": 3, "min_steps": None}
    assert ok["workflow"]["tune_split"] == "method" and ok["workflow"]["points_per_job"] == 1


def test_rungs_never_go_below_what_an_sgmcmc_schedule_needs():
    """A config with few training steps (the smoke config: 12) would give rung 0 too few steps for 2 cycles of 2
    samples; the floor lifts every rung to the fewest steps the schedule accepts, the other methods keep theirs."""
    from bayes_transfer.inference.samplers import CyclicalSchedule

    train = {"cycles": 2, "exploration_fraction": 0.5, "samples_per_cycle": 2}
    floor = halving.min_fit_steps("bnn_learned_prior", train)
    CyclicalSchedule(floor, 2, 0.5, 2)  # accepted
    with pytest.raises(ValueError):
        CyclicalSchedule(floor - 1, 2, 0.5, 2)
    assert halving.min_fit_steps("sgd_transfer", train) == 1
    sh = {"strategy": "successive_halving"}
    assert [s for s, _ in halving.plan(8, 12, sh)] == [1, 4, 12]
    assert [s for s, _ in halving.plan(8, 12, sh, floor)] == [floor, floor, 12]
    assert halving.plan(8, 100, sh, floor) == halving.plan(8, 100, sh)  # the default's rungs (11, 33, 100) unchanged
