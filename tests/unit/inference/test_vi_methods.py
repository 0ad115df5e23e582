"""The variational methods vi_learned_prior / vi_isotropic_prior (BayesAdapter) as downstream methods: S-sample
predictions, the prior each one uses, what reruns them, and failures as data."""

import copy

import pytest
import torch

from bayes_transfer.data.digits import load_digits_tasks, train_subset
from bayes_transfer.inference import variational_fit
from bayes_transfer.inference.loop import Hyper
from bayes_transfer.inference.methods import METHODS, VI_METHODS, relevant_hyper, run_method
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.priors.gaussian import GaussianPrior

FAST = Hyper(steps=12, batch_size=8, lr=0.05, cycles=1, samples_per_cycle=3, temperature=1e-2, prior_scale=1e6,
             isotropic_variance=1.0, log_every=4)


@pytest.fixture(scope="module")
def setup():
    data = load_digits_tasks()
    model, _, _ = pretrain("small_resnet", "supervised", data.source_train, 5, PretrainConfig(steps=20, batch_size=32))
    backbone, _ = split_named_parameters(model)
    prior = GaussianPrior.isotropic(backbone, 1e-4, centred_at_params=True)  # a rank-0 prior, as BBB writes
    return data, copy.deepcopy(model.state_dict()), prior


def run(setup, method, hp=FAST, prior="setup", seed=0):
    data, state, learned = setup
    return run_method(method, arch="small_resnet", pretrained_state=state, num_classes=5,
                      train_set=train_subset(data, 10, seed), eval_sets={"test": data.test}, hp=hp, seed=seed,
                      learned_prior=learned if prior == "setup" else prior)


@pytest.mark.parametrize("method", VI_METHODS)
def test_vi_method_averages_s_draws_and_is_seeded(setup, method):
    res = run(setup, method)
    assert res.success, res.reason
    assert res.num_samples == FAST.cycles * FAST.samples_per_cycle == 3
    p = res.probs["test"]
    assert p.shape == (300, 5) and torch.allclose(p.sum(1), torch.ones(300, dtype=p.dtype))
    assert all("kl" in h for h in res.history) and res.history[-1]["step"] == FAST.steps - 1
    again = run(setup, method)
    assert torch.equal(again.probs["test"], p)  # same seed, same numbers


def test_more_draws_change_the_average_but_not_the_training(setup):
    one = run(setup, "vi_isotropic_prior", Hyper.from_dict(FAST.to_dict() | {"samples_per_cycle": 1}))
    three = run(setup, "vi_isotropic_prior")
    assert one.num_samples == 1 and three.num_samples == 3
    assert one.history == three.history  # S only enters the prediction
    assert not torch.equal(one.probs["test"], three.probs["test"])


def _spy(monkeypatch, function: str, keyword: str) -> list:
    """The values of ``keyword`` that ``variational_fit.<function>`` is called with, in call order."""
    seen, real = [], getattr(variational_fit, function)

    def spy(*args, **kwargs):
        seen.append(kwargs[keyword])
        return real(*args, **kwargs)

    monkeypatch.setattr(variational_fit, function, spy)
    return seen


def test_learned_prior_is_needed_and_rescaled_by_lambda(setup, monkeypatch):
    with pytest.raises(ValueError, match="needs a learned prior"):
        run(setup, "vi_learned_prior", prior=None)
    seen = _spy(monkeypatch, "fit_variational", "prior")
    run(setup, "vi_learned_prior")
    run(setup, "vi_isotropic_prior")
    learned, iso = seen
    assert isinstance(learned, GaussianPrior) and learned.rank == 0
    assert torch.allclose(learned.variance, setup[2].variance * FAST.prior_scale)
    assert iso == FAST.isotropic_variance  # N(0, alpha I), no learned prior


def test_relevant_hyper_reruns_vi_on_its_own_keys_only():
    train = Hyper().to_dict()
    learned, iso = relevant_hyper("vi_learned_prior", train), relevant_hyper("vi_isotropic_prior", train)
    for keys in (learned, iso):
        assert {"temperature", "cycles", "samples_per_cycle", "lr", "steps"} <= set(keys)
        assert "weight_decay" not in keys and "ensemble_size" not in keys
    assert "prior_scale" in learned and "isotropic_variance" not in learned
    assert "isotropic_variance" in iso and "prior_scale" not in iso
    assert not METHODS["vi_learned_prior"].bayesian and METHODS["vi_learned_prior"].variational


def test_a_diverging_vi_fit_is_a_failure_with_its_reason(setup):
    res = run(setup, "vi_isotropic_prior", Hyper.from_dict(FAST.to_dict() | {"lr": 1e6}))
    assert not res.success and "non-finite" in res.reason and res.probs == {}


def test_reparameterisation_is_chosen_by_the_hyper_parameters(setup, monkeypatch):
    modes = _spy(monkeypatch, "sampled_forward", "mode")
    run(setup, "vi_isotropic_prior")
    hp = Hyper.from_dict(FAST.to_dict())
    hp.vi_reparameterisation = "flipout"
    run(setup, "vi_isotropic_prior", hp)
    assert set(modes[:FAST.steps]) == {variational_fit.DEFAULT_REPARAMETERISATION}
    assert set(modes[FAST.steps:]) == {"flipout"}
    hp.vi_reparameterisation = "mean"
    with pytest.raises(ValueError, match="vi_reparameterisation"):
        run(setup, "vi_isotropic_prior", hp)


def test_ood_margin_known_answers():
    """The MI of two draws that agree is 0; of two confident draws that disagree it is log 2, clipped at the margin."""
    import math

    from bayes_transfer.inference.variational_fit import ood_margin

    big = 50.0
    agree = [torch.tensor([[big, 0.0]]), torch.tensor([[big, 0.0]])]
    disagree = [torch.tensor([[big, 0.0]]), torch.tensor([[0.0, big]])]
    assert float(ood_margin(agree, 0.75)) == pytest.approx(0.0, abs=1e-6)
    assert float(ood_margin(disagree, 10.0)) == pytest.approx(math.log(2), abs=1e-5)
    assert float(ood_margin(disagree, 0.5)) == pytest.approx(0.5, abs=1e-6)
    # the batch mean, differentiable
    z = torch.zeros(3, 4, requires_grad=True)
    ood_margin([z, z * 2], 0.75).backward()
    assert z.grad is not None


def test_ood_regulariser_is_off_by_default_and_enters_the_fit_when_weighted(setup):
    plain = run(setup, "vi_isotropic_prior")
    off = run(setup, "vi_isotropic_prior", Hyper.from_dict(FAST.to_dict() | {"vi_ood_weight": 0.0}))
    assert off.history == plain.history and torch.equal(off.probs["test"], plain.probs["test"])
    assert all("ood_mi" not in h for h in plain.history)
    on = run(setup, "vi_isotropic_prior", Hyper.from_dict(FAST.to_dict() | {"vi_ood_weight": 3.0}))
    assert on.success, on.reason
    assert all(0.0 <= h["ood_mi"] <= FAST.vi_ood_margin for h in on.history)  # the clipped MI, logged
    assert not torch.equal(on.probs["test"], plain.probs["test"])  # its gradient moved the fit
    assert "vi_ood_weight" in relevant_hyper("vi_learned_prior", Hyper().to_dict())
    assert "vi_ood_weight" not in relevant_hyper("bnn_learned_prior", Hyper().to_dict())


def test_ood_batches_leave_the_batchnorm_statistics_alone():
    from bayes_transfer.inference.variational_fit import _frozen_batchnorm_statistics

    bn = torch.nn.BatchNorm1d(3).train()
    bn(torch.randn(16, 3))
    before = bn.running_mean.clone(), bn.running_var.clone()
    with _frozen_batchnorm_statistics(bn):
        out = bn(10 + torch.randn(16, 3))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert out.mean().abs() < 1e-5 and bn.momentum == 0.1  # normalised by the batch's statistics; momentum back
