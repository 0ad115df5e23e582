"""Fig. 3 / Fig. 9 machinery: filter normalisation, prior directions, loss along a direction, pooled
reliability bins, the rank-0 prior, ablation summaries (hand-computed answers)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bayes_transfer.stages import landscape
from bayes_transfer.stages.ablation import ablation_stage, pooled_reliability
from bayes_transfer.results.aggregate import ablation_summary
from bayes_transfer.inference.methods import prepare_learned_prior
from bayes_transfer.results.metrics import reliability_bins
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.inference.loop import Hyper


# ------------------------------------------------------------------------------ filter normalisation
def test_filter_normalisation_hand_example():
    # a 2-filter conv weight (2 x 1 x 1 x 2) and a 1-d BatchNorm weight
    theta = {"conv.weight": torch.tensor([[[[3.0, 4.0]]], [[[0.0, 2.0]]]]), "bn.weight": torch.tensor([1.0, 2.0])}
    d = {"conv.weight": torch.tensor([[[[1.0, 0.0]]], [[[6.0, 8.0]]]]), "bn.weight": torch.tensor([5.0, 5.0])}
    out = landscape.filter_normalise(d, theta, eps=0.0)
    # filter 0: ||theta_0|| = 5, ||d_0|| = 1 -> d_0 * 5; filter 1: ||theta_1|| = 2, ||d_1|| = 10 -> d_1 / 5
    expected = torch.tensor([[[[5.0, 0.0]]], [[[1.2, 1.6]]]])
    assert torch.allclose(out["conv.weight"], expected, atol=1e-6)
    assert torch.equal(out["bn.weight"], torch.zeros(2))  # 1-d parameters are not moved (Li et al.)
    kept = landscape.filter_normalise(d, theta, eps=0.0, ignore_1d=False)
    # as one filter: ||theta|| = sqrt(5), ||d|| = sqrt(50) -> d / sqrt(10)
    assert torch.allclose(kept["bn.weight"], torch.tensor([5.0, 5.0]) / math.sqrt(10), atol=1e-6)


def test_filter_normalised_filters_have_the_parameters_norms():
    gen = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(4, 3, 3, 3, generator=gen), "fc": torch.randn(5, 7, generator=gen)}
    d = landscape.random_directions(theta, 1, gen)[0]
    out = landscape.filter_normalise(d, theta)
    for name in theta:
        got = out[name].reshape(out[name].shape[0], -1).norm(dim=1)
        want = theta[name].reshape(theta[name].shape[0], -1).norm(dim=1)
        assert torch.allclose(got, want, rtol=1e-5)


def test_filter_normalisation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="w has shape"):
        landscape.filter_normalise({"w": torch.ones(2, 3)}, {"w": torch.ones(3, 2)})
    with pytest.raises(KeyError, match="lacks"):
        landscape.filter_normalise({"v": torch.ones(2)}, {"w": torch.ones(2)})


# ------------------------------------------------------------------------------ prior directions
def _prior(k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    names, shapes = ["a.weight", "a.bias"], [(3, 2), (3,)]
    d = 9
    return GaussianPrior(torch.randn(d, generator=gen), torch.rand(d, generator=gen) + 0.1,
                         torch.randn(k, d, generator=gen), names=names, shapes=shapes)


def test_prior_directions_are_the_top_singular_vectors():
    prior = _prior()
    dirs = landscape.prior_directions(prior, 2)
    flat = torch.stack([torch.cat([d[n].reshape(-1) for n in prior.names]) for d in dirs]).double()
    # orthonormal, and the first is the leading eigenvector of F^T F
    assert torch.allclose(flat @ flat.T, torch.eye(2, dtype=torch.float64), atol=1e-5)
    evals, evecs = torch.linalg.eigh(prior.factor.double().T @ prior.factor.double())
    assert abs(float(flat[0] @ evecs[:, -1])) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="rank 4"):
        landscape.prior_directions(prior, 5)


# ------------------------------------------------------------------------------ loss along a direction
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2, bias=False)

    def features(self, x):
        return self.lin(x)


def test_loss_along_direction_known_values_and_restores_parameters():
    model = _Tiny()
    with torch.no_grad():
        model.lin.weight.copy_(torch.eye(2))
    head = nn.Identity()
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([0])
    direction = {"lin.weight": torch.tensor([[-1.0, 0.0], [0.0, 0.0]])}
    losses = landscape.loss_along(model, head, direction, [0.0, 1.0], x, y)
    # t = 0: logits (1, 0) -> log(1 + e^-1); t = 1: logits (0, 0) -> log 2
    assert losses[0] == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-9)
    assert losses[1] == pytest.approx(math.log(2), rel=1e-9)
    assert torch.equal(model.lin.weight, torch.eye(2))


def test_linear_head_fits_separable_features():
    gen = torch.Generator().manual_seed(0)
    feats = torch.cat([torch.randn(20, 3, generator=gen) + 4, torch.randn(20, 3, generator=gen) - 4])
    labels = torch.tensor([0] * 20 + [1] * 20)
    head = landscape.train_linear_head(feats, labels, 2, weight_decay=1e-3)
    assert (head(feats).argmax(1) == labels).all()


# ------------------------------------------------------------------------------ rank 0
def test_rank_zero_prior_is_exactly_diagonal():
    prior = _prior(k=4)
    hp = Hyper(prior_rank=0, prior_scale=7.0, prior_truncation="svd")
    p0 = prepare_learned_prior(prior, hp)
    assert p0.rank == 0
    assert torch.equal(p0.covariance(), torch.diag(prior.variance * 7.0))
    x = torch.randn(prior.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    diag = torch.distributions.Normal(prior.mean.double(), (7.0 * prior.variance.double()).sqrt())
    # the prior's tensors are float32, so its variance times 7 is rounded once in float32
    assert float(p0.log_prob(x)) == pytest.approx(float(diag.log_prob(x).sum()), rel=1e-6)


# ------------------------------------------------------------------------------ pooled reliability
def _run_file(tmp_path, name, probs, labels, success=True):
    rec = {"success": success, "metrics": {}}
    if success:
        bins = reliability_bins(torch.tensor(probs, dtype=torch.float64), torch.tensor(labels), n_bins=2)
        rec["metrics"]["test"] = {"reliability": bins.to_dict(orient="list")}
    path = tmp_path / name
    path.write_text(json.dumps(rec))
    return path


def test_pooled_reliability_hand_example(tmp_path):
    # run a: confidences 0.9 (correct), 0.6 (wrong); run b: 0.8 (correct), 0.3 (correct)
    a = _run_file(tmp_path, "a.json", [[0.9, 0.1], [0.6, 0.4]], [0, 1])
    b = _run_file(tmp_path, "b.json", [[0.2, 0.8], [0.3, 0.7]], [1, 1])
    c = _run_file(tmp_path, "c.json", None, None, success=False)
    # b's second example has confidence 0.7 (class 1, correct). Bins (0, .5], (.5, 1]:
    # every confidence is > 0.5 -> bin 1 holds 4 examples: mean conf (0.9+0.6+0.8+0.7)/4, acc 3/4
    pooled = pooled_reliability([a, b, c])
    assert pooled["count"].tolist() == [0, 4]
    assert pooled["mean_confidence"].iloc[1] == pytest.approx(0.75)
    assert pooled["accuracy"].iloc[1] == pytest.approx(0.75)
    assert np.isnan(pooled["accuracy"].iloc[0])
    assert pooled["n_runs"].iloc[0] == 2 and pooled["n_failed"].iloc[0] == 1


# ------------------------------------------------------------------------------ rank / lambda ablations
def test_ablation_summary_counts_failures_and_keeps_failed_values():
    rows = []
    for seed in range(3):
        for k, acc in ((0, 0.5 + 0.1 * seed), (5, 0.8)):
            rows.append(dict(dataset="digits", pretraining="simclr", method="sgd_learned_prior", n_train=50,
                             seed=seed, success=True, prior_rank=k, eval_set="test", metric="accuracy", value=acc))
        rows.append(dict(dataset="digits", pretraining="simclr", method="sgd_learned_prior", n_train=50, seed=seed,
                         success=False, prior_rank=1, eval_set=None, metric=None, value=np.nan))
    s = ablation_summary(pd.DataFrame(rows), "prior_rank")
    by = s.set_index("prior_rank")
    assert by.loc[0, "mean"] == pytest.approx(0.6) and by.loc[0, "se"] == pytest.approx(0.1 / math.sqrt(3))
    assert by.loc[5, "n_failed"] == 0
    assert np.isnan(by.loc[1, "mean"]) and by.loc[1, "n_failed"] == 3


def test_ablation_stage_rejects_unknown_keys_and_bad_layouts():
    kw = dict(checkpoint="x", prior_path=None, tuning_path=None, data_cfg={}, model_cfg={}, train_cfg={})
    with pytest.raises(ValueError, match="cannot vary 'lr'"):
        ablation_stage("sgd_learned_prior", 10, "simclr", [0], "lr", [0.1], [["a"]], **kw)
    with pytest.raises(ValueError, match="one list of per-seed"):
        ablation_stage("sgd_learned_prior", 10, "simclr", [0, 1], "prior_rank", [0], [["a"]], **kw)


def test_lambda_conventions_set_the_authors_device_and_validate():
    from bayes_transfer.stages.ablation import LAMBDA_CONVENTIONS, convention_overrides

    assert convention_overrides("exact") == {"prior_convention": "exact"}
    assert convention_overrides("priorbox") == {"prior_convention": "priorbox", "prior_update": "explicit",
                                                "grad_clip": 2.0}
    for name in LAMBDA_CONVENTIONS:  # every convention is a valid set of hyper-parameters
        Hyper.from_dict(convention_overrides(name))
    with pytest.raises(ValueError, match="unknown prior convention 'paper'.*exact, priorbox"):
        convention_overrides("paper")
    kw = dict(checkpoint="x", prior_path=None, tuning_path=None, data_cfg={}, model_cfg={}, train_cfg={})
    with pytest.raises(ValueError, match="unknown prior convention"):
        ablation_stage("sgd_learned_prior", 10, "simclr", [0], "prior_scale", [1.0], [["a"]], convention="x", **kw)


def test_authors_convention_rescales_variance_plus_eps_and_factor_by_lambda():
    prior = GaussianPrior(torch.tensor([0.0, 1.0]), torch.tensor([1e-8, 2.0]), torch.tensor([[0.5, 0.25]]))
    hp = Hyper.from_dict({"prior_scale": 100.0, "prior_convention": "priorbox"})
    out = prepare_learned_prior(prior, hp)
    assert torch.allclose(out.variance, torch.tensor([1e-6 + 0.1, 200.1]))
    assert torch.allclose(out.factor, torch.tensor([[50.0, 25.0]]))


def test_ablation_summary_keeps_conventions_apart():
    rows = []
    for conv, acc in (("exact", 0.7), ("priorbox", 0.4)):
        for seed in range(2):
            rows.append(dict(dataset="digits", pretraining="simclr", method="sgd_learned_prior", n_train=50,
                             seed=seed, success=True, prior_scale=1.0, prior_convention=conv, eval_set="test",
                             metric="accuracy", value=acc + 0.1 * seed))
    s = ablation_summary(pd.DataFrame(rows), "prior_scale", by=["prior_convention"]).set_index("prior_convention")
    assert s.loc["exact", "mean"] == pytest.approx(0.75) and s.loc["priorbox", "mean"] == pytest.approx(0.45)
    assert s.loc["exact", "n_ok"] == 2
