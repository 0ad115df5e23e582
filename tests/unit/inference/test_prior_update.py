"""The one training loop with a stiff learned prior: ``prior_update: split`` (default) stays stable at every
lambda, ``explicit`` diverges where the prior's curvature exceeds the step's stability limit and says why.

Prior over a small ResNet's backbone: variances log-uniform over 8 decades (1e-9 .. 1e-1, a SWAG prior's
floor and its loosest coordinates), a rank-2 factor of the same size, mean 0.01 away from the initial
weights. N = 48, lr 0.05: the explicit step's largest prior curvature lr / (N lambda v) is ~1e6 at lambda = 1.
"""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from bayes_transfer.inference.loop import Hyper, explicit_stiffness, fit
from bayes_transfer.models.resnets import build_model, split_named_parameters
from stiff_prior import stiff_prior

N = 48
LAMBDAS = [10.0 ** e for e in range(0, 9, 2)]  # 1 .. 1e8
# (inference, nesterov): SGD, SGHMC (heavy ball and Nesterov's, as segmentation runs it), SGLD
KINDS = [("sgd", False), ("sgd", True), ("sghmc", False), ("sghmc", True), ("sgld", False)]


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


_prior = stiff_prior


def _run(inference, nesterov, lam, **hyper):
    torch.manual_seed(1)
    model = build_model("small_resnet", 3, width=8)
    prior = _prior(model).rescale(lam)
    hp = Hyper(steps=30, batch_size=8, lr=0.05, cycles=1, samples_per_cycle=2, temperature=1e-3, log_every=5,
               prior_scale=lam, **hyper)
    return fit(model, _data(N, 0), inference=inference, hp=hp, eval_sets={"test": _data(20, 9)},
               backbone_prior=prior, seed=3, nesterov=nesterov), prior


@pytest.mark.parametrize("inference, nesterov", KINDS)
def test_the_default_split_update_is_stable_at_every_lambda(inference, nesterov):
    for lam in LAMBDAS:
        res, _ = _run(inference, nesterov, lam)
        assert res.success, (lam, res.reason)
        assert math.isfinite(res.prior_energy) and math.isfinite(res.prior_quadratic)
        d = res.diagnostics()
        assert d["prior_energy_per_datum"] == res.prior_energy
        if inference == "sgd":
            # the MAP's objective is at most the objective at the prior mean (data loss ~ log 3 there, the
            # quadratic 0): a bound of 5 nats per datum on the quadratic, whatever lambda; it starts at ~1e4
            # (lambda = 1) because the mean is 0.01 away from the initial weights
            assert res.prior_quadratic < 5.0, (lam, res.prior_quadratic)


@pytest.mark.parametrize("inference, nesterov", [("sgd", False), ("sghmc", True), ("sgld", False)])
def test_the_explicit_update_diverges_for_the_stiff_lambdas_and_says_why(inference, nesterov):
    for lam in (1.0, 1e2):
        res, prior = _run(inference, nesterov, lam, prior_update="explicit")
        assert not res.success, lam
        assert "stability limit" in res.reason and "prior_update 'explicit'" in res.reason, res.reason
        assert res.prior_energy is None and res.probs == {}
        assert explicit_stiffness(prior.bind(split_named_parameters(build_model("small_resnet", 3, width=8))[0]),
                                  0.05, N) > 1e3
    res, _ = _run(inference, nesterov, 1e8, prior_update="explicit")  # lr / (N lambda v) <= 0.01: stable
    assert res.success, res.reason


def test_split_and_explicit_agree_where_the_prior_is_soft():
    """At lambda = 1e8 (lr c <= 0.01) the exact split and the explicit step differ by O(lr c) per step only
    (plain SGD: with momentum 0.9 this small network on random labels amplifies any difference ~30x in 30 steps)."""
    a, _ = _run("sgd", False, 1e8, momentum=0.0)
    b, _ = _run("sgd", False, 1e8, prior_update="explicit", momentum=0.0)
    assert torch.allclose(a.probs["test"], b.probs["test"], atol=0.02)
    assert a.prior_energy == pytest.approx(b.prior_energy, rel=1e-3)


def test_gradient_clipping_bounds_the_explicit_step():
    """The authors' device: with the gradient norm clipped to 2 an explicit stiff step can no longer blow up
    to infinity in 30 steps (it oscillates instead); with their eps (variance + 0.1) it is stable outright."""
    res, _ = _run("sgd", False, 1.0, prior_update="explicit", grad_clip=2.0, prior_convention="priorbox")
    assert math.isfinite(res.history[-1]["loss"])


@pytest.mark.parametrize("values, match", [({"prior_update": "implicit"}, "prior_update"),
                                           ({"grad_clip": -1.0}, "grad_clip"),
                                           ({"prior_convention": "paper"}, "prior_convention")])
def test_bad_prior_update_settings_are_named(values, match):
    with pytest.raises(ValueError, match=match):
        Hyper.from_dict(values)
