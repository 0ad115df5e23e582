"""Known answers of the pipeline's controls (bayes_transfer.controls, docs/controls.md)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bayes_transfer.audit.stats import SUPPORTED
from bayes_transfer.controls.model import ARCH, ControlNet
from bayes_transfer.controls.registry import registered
from bayes_transfer.controls.run import CONTROL_CLAIMS, CONTROL_METHODS, ControlSettings, control_verdicts, run_control
from bayes_transfer.controls.standalone import expected_outcome
from bayes_transfer.controls.subspace import input_covariance, shared_subspace_contrast, subspace_shares
from bayes_transfer.controls.task import ControlSpec, control_data, control_task
from bayes_transfer.priors.gaussian import GaussianPrior

# thresholds of the known answers (measured on the default spec, 2026-12-01: V 0.525, V' + N 4.5e-5, contrast
# 1.4e5 for the positive prior; V 3.2e-6, contrast 1.0 for the negative one)
SHARED_SHARE_MIN = 0.25  # the positive prior's share of its variance in the shared subspace V, at least
OUTSIDE_SHARE_MAX = 1e-3  # its share in V' + N (the negative prior's in V), at most
CONTRAST_MIN = 1e3  # positive: the least variance along V over the largest along N, at least


def _energy(ds, basis):
    x = ds.tensors[0].reshape(len(ds), -1).double()
    return float((x @ basis).pow(2).sum() / x.pow(2).sum())


def test_generator_is_deterministic_and_seeded():
    a, b = control_data("positive"), control_data("positive")
    for name in ("source", "pool", "val", "test"):
        for ta, tb in zip(getattr(a, name).tensors, getattr(b, name).tensors):
            assert torch.equal(ta, tb)
    other = control_data("positive", ControlSpec(seed=1))
    assert not torch.equal(a.pool.tensors[0], other.pool.tensors[0])


def test_variants_share_the_downstream_task_and_differ_in_the_source():
    pos, neg = control_data("positive"), control_data("negative")
    for name in ("pool", "val", "test"):
        for tp, tn in zip(getattr(pos, name).tensors, getattr(neg, name).tensors):
            assert torch.equal(tp, tn)
    sub = pos.subspaces
    # the source of the positive control varies in S + V only, the negative one's in S + V' only
    assert _energy(pos.source, sub["V_prime"]) == 0.0 and _energy(pos.source, sub["N"]) == 0.0
    assert _energy(neg.source, sub["V"]) == 0.0 and _energy(neg.source, sub["N"]) == 0.0
    assert _energy(pos.source, sub["V"]) > 0.05 and _energy(neg.source, sub["V_prime"]) > 0.05
    # the downstream classes live in V; its inputs are V + nuisance N, nothing in S or V'
    assert _energy(pos.test, sub["S"]) == 0.0 and _energy(pos.test, sub["V_prime"]) == 0.0
    x, y = pos.test.tensors[0].reshape(len(pos.test), -1).double(), pos.test.tensors[1]
    means_v = torch.stack([(x[y == c] @ sub["V"]).mean(0) for c in range(5)])
    means_n = torch.stack([(x[y == c] @ sub["N"]).mean(0) for c in range(5)])
    assert torch.cdist(means_v, means_v).max() > 2.0 and torch.cdist(means_n, means_n).max() < 1.0


def test_subspaces_are_orthonormal_and_complete():
    for rotate in (False, True):
        sub = control_data("positive", ControlSpec(rotate=rotate)).subspaces
        q = torch.cat([sub[k] for k in ("S", "V", "V_prime", "N")], dim=1)
        assert torch.allclose(q.T @ q, torch.eye(64, dtype=torch.float64), atol=1e-10)


def test_subspace_shares_of_a_known_prior():
    """A prior whose whole covariance lies along pixel 0 of feature 0: share 1 there, 0 elsewhere."""
    d, f = 4, 2
    factor = torch.zeros(1, f * d)
    factor[0, 0] = 1.0
    prior = GaussianPrior(torch.zeros(f * d), torch.full((f * d,), 1e-12), factor, names=["body.weight"],
                          shapes=[(f, d)])
    eye = torch.eye(d, dtype=torch.float64)
    sub = {"A": eye[:, :1], "B": eye[:, 1:]}
    shares = subspace_shares(prior, sub)
    assert shares["covariance"]["A"] == pytest.approx(1.0, abs=1e-9)
    assert shares["top_directions"]["A"] == pytest.approx(1.0) and shares["top_directions"]["B"] == pytest.approx(0.0)
    assert shared_subspace_contrast(prior, sub["A"], sub["B"]) > 1e9
    assert input_covariance(prior).shape == (d, d)


def test_control_task_and_network_in_the_stages():
    task = control_task({"dataset": "control_negative", "n_val": 50})
    assert (task.name, task.num_classes, len(task.val), task.shifted_test) == ("control_negative", 5, 50, None)
    with pytest.raises(ValueError, match="unknown keys"):
        control_task({"dataset": "control_positive", "nonsense": 1})
    from bayes_transfer.models import resnets
    from bayes_transfer.stages import task as task_module

    before = (resnets.build_model, task_module.load_task)
    with registered():
        assert isinstance(resnets.build_model(ARCH, 5), ControlNet)
        assert task_module.load_task({"dataset": "control_positive"}).name == "control_positive"
        with pytest.raises(ValueError, match="unknown arch"):
            resnets.build_model("no_such_arch", 5)
    assert (resnets.build_model, task_module.load_task) == before
    with pytest.raises(ValueError, match="unknown arch"):
        resnets.build_model(ARCH, 5)


def _learned_prior(variant: str, tmp_path, spec: dict | None = None) -> tuple[GaussianPrior, dict]:
    """The control's SWAG prior through the stages, with the default pre-training and SWAG settings."""
    from bayes_transfer.stages.source import prior_stage, pretrain_stage

    s = ControlSettings(spec=spec or {})
    ckpt, out = str(tmp_path / f"{variant}.pt"), str(tmp_path / f"{variant}_prior.pt")
    with registered():
        pretrain_stage("supervised", s.data_cfg(variant), s.model_cfg(), s.pretrain, ckpt, device="cpu")
        prior = prior_stage("supervised", ckpt, s.data_cfg(variant), s.model_cfg(), s.swag_cfg(), out, device="cpu")
    return prior, control_data(variant, ControlSpec(**(spec or {}))).subspaces


def test_positive_prior_spans_the_shared_subspace_and_negative_does_not(tmp_path):
    pos, sub = _learned_prior("positive", tmp_path)
    neg, _ = _learned_prior("negative", tmp_path)
    p, n = subspace_shares(pos, sub), subspace_shares(neg, sub)
    assert p["covariance"]["V"] >= SHARED_SHARE_MIN
    assert p["covariance"]["V_prime"] + p["covariance"]["N"] <= OUTSIDE_SHARE_MAX
    assert p["top_directions"]["S"] + p["top_directions"]["V"] >= 1 - OUTSIDE_SHARE_MAX
    assert shared_subspace_contrast(pos, sub["V"], sub["N"]) >= CONTRAST_MIN
    assert n["covariance"]["V"] <= OUTSIDE_SHARE_MAX and n["top_directions"]["V"] <= OUTSIDE_SHARE_MAX
    assert n["covariance"]["V_prime"] >= SHARED_SHARE_MIN
    assert shared_subspace_contrast(neg, sub["V"], sub["N"]) < 10.0  # V is as tight as the nuisance


def test_rotated_subspaces_reach_the_prior_only_through_its_low_rank_half(tmp_path):
    """With rotate: true the top SWAG directions still lie in S + V, but the per-coordinate diagonal spreads the
    variance over every direction (why the default uses pixel subspaces)."""
    prior, sub = _learned_prior("positive", tmp_path, {"rotate": True})
    shares = subspace_shares(prior, sub)
    assert shares["top_directions"]["S"] + shares["top_directions"]["V"] >= 1 - OUTSIDE_SHARE_MAX
    assert shares["covariance"]["N"] >= 0.1
    assert shared_subspace_contrast(prior, sub["V"], sub["N"]) < 10.0


def test_end_to_end_on_a_tiny_setting_gives_run_records_and_verdicts(tmp_path):
    tiny = ControlSettings(
        spec={"n_source": 300, "n_pool": 60, "n_val": 50, "n_test": 100},
        # augment as configs/fashion.yaml sets it: the control task has no augmentation, so it is dropped there
        pretrain={"steps": 40, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "augment": True},
        swag={"cycles": 3, "steps_per_cycle": 10, "lr": 0.1, "burn_in_cycles": 1, "max_rank": 5, "augment": True},
        grids={m: ({"prior_scale": [1e4]} if "learned_prior" in m else
                   {"weight_decay": [1e-4]} if m == "sgd_transfer" else {"isotropic_variance": [1.0]})
               for m in CONTROL_METHODS},
        sizes=[10, 20], seeds=[0, 1])
    tiny.train |= {"steps": 10, "log_every": 5}
    r = run_control("positive", tmp_path, tiny)
    runs = r.runs
    assert set(runs["method"]) == set(CONTROL_METHODS) and set(runs["dataset"]) == {"control_positive"}
    assert runs["path"].nunique() == len(CONTROL_METHODS) * 2 * 2 and runs["success"].all()
    assert set(runs["metric"]) >= {"accuracy", "error", "nll", "ece"} and set(runs["eval_set"]) == {"test"}
    assert {"arch", "pretraining", "n_train", "seed", "prior_scale", "value"} <= set(runs.columns)
    assert r.cpu_s > 0 and set(r.stage_cpu_s) == {"pretrain", "prior", "tune", "fit"}
    v = control_verdicts(runs)
    assert list(v["claims"]["claim"]) == list(CONTROL_CLAIMS)
    assert set(v["parts"]["part"]) == {"C3 SGD", "C3 BNN", "C4", "C10 SGD", "C10 BNN"}
    assert (v["parts"]["n_pairs"] == 4).all()  # 2 sizes x 2 seeds per part
    with pytest.raises(ValueError, match="one control per call"):
        control_verdicts(pd.concat([runs, runs.assign(dataset="control_negative")]))


def test_expected_outcome():
    def claims(c3, c4, c10):
        return pd.DataFrame({"claim": ["C3", "C4", "C10"], "verdict": [c3, c4, c10]})

    assert expected_outcome("positive", claims(SUPPORTED, "inconclusive", SUPPORTED))["passed"]
    assert not expected_outcome("positive", claims(SUPPORTED, SUPPORTED, "no relevant effect"))["passed"]
    assert expected_outcome("negative", claims("no relevant effect", "inconclusive", "contradicted"))["passed"]
    out = expected_outcome("negative", claims("no relevant effect", SUPPORTED, "inconclusive"))
    assert not out["passed"] and "C4" in out["why"]
