"""Fair tuning: the selection rule (NLL, ties by NLL never by grid order), the flags of a selection (grid edge,
chance level, small validation), the wd / lr grid convention, the validation data, and the audit's flag table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayes_transfer.audit.tuning_flags import read_tuning_flags, tuning_flags, tuning_flags_markdown
from bayes_transfer.io import save_torch
from bayes_transfer.models.resnets import build_model
from bayes_transfer.stages import experiment, halving, selection
from bayes_transfer.stages.task import load_task, tuning_data

DIGITS = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}


def row(values, error, nll, success=True):
    return {"values": values, "fitted": values, "error": error, "nll": nll, "accuracy": 1 - error,
            "success": success}


@pytest.mark.parametrize("score", selection.SCORES)
def test_equal_error_lower_nll_wins_whatever_the_grid_order(score):
    a, b = row({"isotropic_variance": 0.1}, 0.2, 1.6), row({"isotropic_variance": 100.0}, 0.2, 0.4)
    assert selection.select([a, b], score) is b
    assert selection.select([b, a], score) is b


def test_error_then_nll_prefers_lower_error_and_nll_ranks_by_nll():
    low_err, low_nll = row({"lr": 0.01}, 0.10, 0.9), row({"lr": 0.05}, 0.12, 0.3)
    assert selection.select([low_nll, low_err], "error_then_nll") is low_err
    assert selection.select([low_err, low_nll], "nll") is low_nll


def test_failed_and_nonfinite_points_never_win_and_all_failed_is_none():
    ok, bad, nan = row({"x": 1}, 0.5, 2.0), row({"x": 2}, 0.0, 0.0, success=False), row({"x": 3}, 0.0, math.nan)
    assert selection.select([bad, nan, ok], "nll") is ok
    assert selection.select([bad, nan], "nll") is None


def test_exact_ties_go_to_the_smaller_values_not_the_first_listed():
    a, b = row({"temperature": 1e-2}, 0.2, 1.0), row({"temperature": 1e-4}, 0.2, 1.0)
    assert selection.select([a, b], "nll") is b and selection.select([b, a], "nll") is b


def test_unknown_score_is_a_clear_error():
    with pytest.raises(ValueError, match="tuning.score must be one of"):
        selection.select([row({}, 0.1, 0.1)], "accuracy")


def test_grid_edges_low_high_inside_and_zero_is_not_an_edge():
    grid = {"isotropic_variance": [1e4, 1e-2, 1.0, 1e2], "temperature": [1e-4, 1e-2], "weight_decay": [0.0, 1e-4],
            "sampler": ["sghmc"]}
    assert selection.grid_edges(grid, {"isotropic_variance": 1e-2, "temperature": 1e-2, "weight_decay": 0.0,
                                       "sampler": "sghmc"}) == {"isotropic_variance": "low", "temperature": "high"}
    assert selection.grid_edges(grid, {"isotropic_variance": 1.0, "temperature": 1e-4, "weight_decay": 1e-4}) == {
        "temperature": "low", "weight_decay": "high"}
    assert selection.grid_edges({"lr": [0.05]}, {"lr": 0.05}) == {}


def test_chance_level_is_one_over_classes_plus_two_standard_errors():
    # 5 classes, 150 validation images: 0.2 + 2 sqrt(0.2 * 0.8 / 150) = 0.26532
    assert selection.chance_accuracy(5, 150) == pytest.approx(0.2 + 2 * math.sqrt(0.16 / 150), abs=1e-12)
    assert selection.chance_accuracy(5, 150) == pytest.approx(0.26532, abs=1e-5)
    assert selection.at_chance(0.2, 5, 150) and selection.at_chance(0.26, 5, 150)
    assert not selection.at_chance(0.27, 5, 150) and not selection.at_chance(0.9, 5, 150)


@pytest.mark.parametrize("score", selection.SCORES)
def test_a_point_at_chance_ranks_after_every_point_above_chance_whatever_its_nll(score):
    # the digits' SimCLR bnn_isotropic_prior at n = 10: alpha 0.01 collapsed to the uniform prediction (NLL
    # log 5 = 1.609, accuracy 0.19) and out-scored every classifying point, whose NLL was higher
    collapsed = row({"isotropic_variance": 0.01}, 0.81, 1.6105) | {"at_chance": True}
    classifying = row({"isotropic_variance": 100.0}, 0.30, 1.9) | {"at_chance": False}
    assert selection.select([collapsed, classifying], score) is classifying
    assert halving.promote([collapsed, classifying], 1, score) == [1]
    # only when every point is at chance is one of them selected, by the score as before
    worse = row({"isotropic_variance": 1.0}, 0.82, 1.7) | {"at_chance": True}
    assert selection.select([worse, collapsed], score) is collapsed
    # rows without the field (tuning files of earlier versions) rank by the score alone
    assert selection.select([row({"x": 1}, 0.8, 1.61), row({"x": 2}, 0.3, 1.9)], "nll")["values"] == {"x": 1}


def test_weight_decay_is_divided_by_the_points_learning_rate():
    points = selection.expand_grid({"lr": [0.01, 0.05], "weight_decay": [0.0, 1e-2]}, True, lr=0.5)
    fitted = {(p["lr"], p["weight_decay"]): f["weight_decay"] for p, f in points}
    assert fitted == {(0.01, 0.0): 0.0, (0.01, 1e-2): pytest.approx(1.0), (0.05, 0.0): 0.0,
                      (0.05, 1e-2): pytest.approx(0.2)}
    (p, f), = selection.expand_grid({"weight_decay": [1e-3]}, True, lr=0.05)  # the train section's lr
    assert p == {"weight_decay": 1e-3} and f["weight_decay"] == pytest.approx(0.02)
    assert selection.expand_grid({"weight_decay": [1e-3]}, False, lr=0.05)[0][1] == {"weight_decay": 1e-3}


def test_task_validation_is_the_digits_split_disjoint_from_the_n_training_examples():
    task = load_task(DIGITS)
    train, val = tuning_data(task, 10, 1000, "task")
    assert len(train) == 10 and len(val) == 150 >= selection.MIN_VALIDATION
    rows = lambda ds: {tuple(np.round(x.numpy().ravel(), 5)) for x in ds.tensors[0]}  # noqa: E731
    assert not rows(train) & rows(val)
    assert np.bincount(task.labels(val), minlength=5).min() >= 29  # stratified: 150 / 5 classes +- 1
    h_train, h_val = tuning_data(task, 10, 1000, "holdout", 0.3)
    assert len(h_train) + len(h_val) == 10 and len(h_val) < selection.MIN_VALIDATION
    with pytest.raises(ValueError, match="tuning.validation must be one of"):
        tuning_data(task, 10, 1000, "test")


def test_task_validation_without_a_validation_split_is_a_clear_error():
    task = load_task(DIGITS | {"n_val": 0})
    with pytest.raises(ValueError, match="tuning.validation: task needs a dataset with its own validation split"):
        tuning_data(task, 10, 1000, "task")


def test_tune_stage_scores_on_150_images_and_writes_the_flags(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    save_torch({"state_dict": build_model("small_resnet", 5).state_dict()}, str(ckpt))
    grid = {"lr": [0.01, 0.05], "weight_decay": [0.0, 1e-2]}
    out = tmp_path / "n10.json"
    train = {"steps": 2, "batch_size": 8, "log_every": 1}
    (res,) = experiment.tune_stage("sgd_transfer", [10], "supervised", checkpoint=str(ckpt), prior_path=None,
                                   data_cfg=DIGITS, model_cfg={"arch": "small_resnet"}, train_cfg=train, grid=grid,
                                   tuning_cfg={"seed": 1000, "validation": "task", "score": "nll"},
                                   outs=[str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert res["n_tune_train"] == 10 and res["n_tune_val"] == 150 and not res["small_validation"]
    assert res["validation"] == "task" and res["score"] == "nll" and len(res["grid"]) == 4
    best = min(res["grid"], key=lambda r: r["nll"])
    assert res["selected_grid"] == best["values"] and res["selected_scores"]["nll"] == best["nll"]
    assert res["selected"]["weight_decay"] == pytest.approx(best["values"]["weight_decay"] / best["values"]["lr"])
    assert res["edge"] == selection.grid_edges(grid, best["values"])
    # two steps from a random network: at chance on validation, and flagged so
    assert res["chance"] == (best["accuracy"] <= res["chance_accuracy"])


def test_audit_flag_table_lists_every_flag(tmp_path):
    rec = {"pretraining": "supervised", "method": "bnn_isotropic_prior", "n_train": 10, "success": True,
           "selected_grid": {"isotropic_variance": 1e4}, "edge": {"isotropic_variance": "high"}, "chance": True,
           "selected_scores": {"accuracy": 0.2}, "chance_accuracy": 0.265, "small_validation": True,
           "n_tune_val": 5}
    clean = {"pretraining": "simclr", "method": "sgd_transfer", "n_train": 50, "success": True,
             "selected_grid": {"lr": 0.05}, "edge": {}, "chance": False, "small_validation": False}
    flags = tuning_flags([clean, rec])
    assert list(flags["flag"]) == ["chance", "edge", "small_validation"]
    assert set(flags["method"]) == {"bnn_isotropic_prior"}
    assert "isotropic_variance at the high edge" in flags.loc[flags.flag == "edge", "detail"].item()
    path = tmp_path / "n10.json"
    path.write_text(json.dumps(rec))
    assert read_tuning_flags([path]).equals(flags)
    assert "3 flag(s)" in tuning_flags_markdown(flags, 1)
    assert "No selection is flagged" in tuning_flags_markdown(tuning_flags([clean]), 1)
    with pytest.raises(ValueError, match="not a readable tuning file"):
        read_tuning_flags([tmp_path / "missing.json"])


def test_chains_average_into_one_bma_and_sgd_methods_run_one():
    from bayes_transfer.inference.loop import FitResult

    assert experiment.chain_seeds("bnn_isotropic_prior", 3, 1) == [3]
    assert experiment.chain_seeds("bnn_learned_prior", 3, 3) == [3, 100_006, 200_009]
    assert experiment.chain_seeds("sgd_transfer", 3, 5) == [3]
    with pytest.raises(ValueError, match="train.chains must be >= 1"):
        experiment.chain_seeds("bnn_learned_prior", 0, 0)
    a = FitResult({"test": torch.tensor([[1.0, 0.0]])}, True, num_samples=4, prior_energy=1.0, prior_quadratic=0.5)
    b = FitResult({"test": torch.tensor([[0.5, 0.5]])}, True, num_samples=4, prior_energy=3.0, prior_quadratic=1.5)
    avg = experiment.average_chains([a, b])
    assert torch.equal(avg.probs["test"], torch.tensor([[0.75, 0.25]])) and avg.num_samples == 8
    assert avg.prior_energy == 2.0 and avg.prior_quadratic == 1.0
    assert experiment.average_chains([a]) is a
    failed = experiment.average_chains([a, FitResult({}, False, "diverged at step 3")])
    assert not failed.success and failed.reason == "chain 1 of 2: diverged at step 3"


def test_fit_stage_with_two_chains_keeps_the_first_chain_and_doubles_the_samples(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    save_torch({"state_dict": build_model("small_resnet", 5).state_dict()}, str(ckpt))
    train = {"steps": 4, "batch_size": 8, "cycles": 1, "samples_per_cycle": 1, "temperature": 1e-4, "log_every": 1}
    kw = dict(checkpoint=str(ckpt), prior_path=None, tuning_path=None, data_cfg=DIGITS,
              model_cfg={"arch": "small_resnet"})
    one, = experiment.fit_stage("bnn_isotropic_prior", 10, "supervised", [0], train_cfg=train | {"chains": 1},
                                outs=[str(tmp_path / "one.json")], **kw)
    two, = experiment.fit_stage("bnn_isotropic_prior", 10, "supervised", [0], train_cfg=train | {"chains": 2},
                                outs=[str(tmp_path / "two.json")], **kw)
    assert one["success"] and two["success"] and two["hyper"]["chains"] == 2
    assert two["diagnostics"]["num_samples"] == 2 * one["diagnostics"]["num_samples"] == 2
    assert two["metrics"]["test"]["nll"] != one["metrics"]["test"]["nll"]
    # the OOD sets are scored for detection against the test set: entropy always, mutual information with the
    # two chains' two samples only (one sample: MI is identically 0)
    assert set(one["metrics"]["ood_source"]) == {"auroc_entropy", "ap_entropy"}
    assert set(two["metrics"]["ood_noise"]) == {"auroc_entropy", "ap_entropy", "auroc_mi", "ap_mi"}
    assert all(0.0 <= v <= 1.0 for m in two["metrics"].values() if "auroc_mi" in m for v in m.values())
