"""Mean-field Gaussian variational fine-tuning: known answers on Gaussian / linear models."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.kl import PriorKL
from bayes_transfer.inference.variational import (
    MeanFieldGaussian, load_mean_into, load_sample_into, negative_elbo, predict_probs_sampled, sampled_forward,
)

NOISE_VAR = 0.25  # known observation noise of the linear-Gaussian models


def _gauss_nll(pred, y):  # mean Gaussian negative log-likelihood with known noise variance
    return ((pred.squeeze(-1) - y).square() / (2 * NOISE_VAR)).mean() + 0.5 * math.log(2 * math.pi * NOISE_VAR)


def _linear_problem(seed, n=16, d=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w_true = torch.randn(d, generator=g, dtype=dtype)
    y = x @ w_true + 0.3 + NOISE_VAR ** 0.5 * torch.randn(n, generator=g, dtype=dtype)
    return x, y, g


# ------------------------------------------------------------------------------ basics
def test_parameterisations_init_and_to_prior():
    params = {"a.weight": torch.ones(3, 2), "a.bias": torch.zeros(3)}
    q = MeanFieldGaussian(params, generator=torch.Generator().manual_seed(0))  # BayesAdapter: sigma = exp(psi)
    psi = torch.cat([p.detach().reshape(-1) for p in q.psi])
    assert psi.min() >= -6.0 and psi.max() <= -5.0 and psi.std() > 0.1
    assert torch.equal(q.mu[0].detach(), params["a.weight"])
    assert torch.allclose(q.sigmas()[0], q.psi[0].exp())
    byov = MeanFieldGaussian(params, parameterisation="log_var", psi_init=(-10.0, -10.0))
    assert torch.allclose(byov.sigmas()[1], torch.full((3,), math.exp(-5.0)))
    bbb = MeanFieldGaussian(params, parameterisation="softplus", psi_init=(0.0, 0.0))
    assert torch.allclose(bbb.sigmas()[0], torch.full((3, 2), math.log(2.0)))
    prior = byov.to_prior({"method": "test"})
    assert prior.rank == 0 and prior.names == ["a.weight", "a.bias"] and prior.metadata["method"] == "test"
    assert torch.allclose(prior.variance, torch.full((9,), math.exp(-10.0)))
    with pytest.raises(ValueError, match="parameterisation"):
        MeanFieldGaussian(params, parameterisation="exp")
    with pytest.raises(ValueError, match="num_data"):
        negative_elbo(torch.tensor(1.0), torch.tensor(1.0), 0)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3)).double()


def test_exemplar_forward_equals_one_network_per_example():
    net = _small_net().eval()  # BatchNorm in eval mode: each example's output depends on its own weights only
    q = MeanFieldGaussian(dict(net.named_parameters()), psi_init=(-2.0, -1.0),
                          generator=torch.Generator().manual_seed(1))
    x = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = sampled_forward(net, q, x, mode="exemplar", generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in q's order: (b, *shape) per parameter
    draws = {n: m + s * torch.randn((6, *m.shape), generator=g, dtype=m.dtype)
             for n, m, s in zip(q.names, q.mu, q.sigmas())}
    for i in range(6):
        ref = functional_call(net, {n: w[i] for n, w in draws.items()}, (x[i:i + 1],))
        assert torch.allclose(out[i], ref[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(out[0], functional_call(net, {n: w[1] for n, w in draws.items()}, (x[:1],))[0])


@pytest.mark.parametrize("mode", ["exemplar", "flipout", "shared"])
def test_training_mode_batchnorm_with_vanishing_sigma_is_the_plain_network(mode):
    net, ref = _small_net().train(), _small_net().train()
    q = MeanFieldGaussian(dict(net.named_parameters()), psi_init=(-40.0, -40.0))
    x = torch.randn(5, 3, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = sampled_forward(net, q, x, mode=mode, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out, ref(x), rtol=1e-9, atol=1e-12)
    for a, b in zip(net.buffers(), ref.buffers()):  # running statistics updated as by the module itself
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)  # (the grouped convolution rounds differently)
    assert int(net[1].num_batches_tracked) == 1
    assert "forward" not in vars(net[0])  # the patch is undone


# ------------------------------------------------------------------------------ unbiased ELBO gradient
def _closed_form_loss(q, x, y, kl, n_data):
    """Exact E_q[mean NLL] + KL / N for the linear-Gaussian model y = x w + b + noise."""
    (mw, mb), (sw, sb) = q.mu, q.sigmas()
    pred = x @ mw.reshape(-1) + mb
    e_sq = (y - pred).square() + x.square() @ sw.reshape(-1).square() + sb.square()
    nll = (e_sq / (2 * NOISE_VAR)).mean() + 0.5 * math.log(2 * math.pi * NOISE_VAR)
    return nll + kl(q) / n_data


def _grad(loss, q):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(q.mu) + list(q.psi))])


def _linear_q_and_prior(seed):
    x, y, g = _linear_problem(seed)
    torch.manual_seed(seed)
    net = nn.Linear(4, 1).double()
    q = MeanFieldGaussian(dict(net.named_parameters()), psi_init=(-1.5, -0.5), generator=g)
    prior = GaussianPrior(torch.zeros(5, dtype=torch.float64), 0.5 + torch.rand(5, generator=g, dtype=torch.float64),
                          0.4 * torch.randn(2, 5, generator=g, dtype=torch.float64),
                          names=["weight", "bias"], shapes=[(1, 4), (1,)])
    return x, y, net, q, prior


@pytest.mark.parametrize("mode", ["exemplar", "shared", "flipout"])
def test_elbo_gradient_estimate_is_unbiased(mode):
    x, y, net, q, prior = _linear_q_and_prior(10)
    kl, n_data, draws = PriorKL(prior), 100, 1000
    exact = _grad(_closed_form_loss(q, x, y, lambda q_: q_.kl(kl), n_data), q)
    gen = torch.Generator().manual_seed(11)
    grads = torch.stack([
        _grad(negative_elbo(_gauss_nll(sampled_forward(net, q, x, mode=mode, generator=gen), y), q.kl(kl), n_data), q)
        for _ in range(draws)
    ])
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(draws)
    # tolerance: every coordinate (5 mu, 5 psi) within 4 standard errors of the closed-form gradient
    assert torch.all((mean - exact).abs() <= 4 * se), ((mean - exact) / se)
    assert float(se.max()) < 0.05 * float(exact.abs().max())  # and the check is sharp


# ------------------------------------------------------------------------------ gradient variance
def test_exemplar_reparameterisation_has_lower_gradient_variance_than_one_shared_sample():
    # BayesAdapter's toy case: one convolution, fixed input and target, gradient variance over 300 runs,
    # averaged over all coordinates of mu and psi
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 6, 6, generator=g, dtype=torch.float64)
    target = torch.randn(32, 8, 6, 6, generator=g, dtype=torch.float64)
    q = MeanFieldGaussian(dict(conv.named_parameters()), psi_init=(-2.0, -1.0), generator=g)
    var, mean, se = {}, {}, {}
    for mode in ("exemplar", "flipout", "shared"):
        gen = torch.Generator().manual_seed(2)
        grads = torch.stack([
            _grad(F.mse_loss(sampled_forward(conv, q, x, mode=mode, generator=gen), target), q) for _ in range(300)
        ])
        var[mode] = float(grads.var(0).mean())
        mean[mode], se[mode] = grads.mean(0), grads.std(0) / math.sqrt(300)
    # all three estimate the same expected gradient (convolution included): 440 coordinates within 5 combined
    # standard errors (measured max |z| = 3.9)
    for mode in ("flipout", "shared"):
        z = (mean[mode] - mean["exemplar"]) / torch.sqrt(se[mode] ** 2 + se["exemplar"] ** 2)
        assert float(z.abs().max()) < 5.0, (mode, float(z.abs().max()))
    # measured: shared / exemplar = 18.5x, shared / flipout = 5.7x on this case (batch 32)
    assert var["shared"] > 8.0 * var["exemplar"], var
    assert var["shared"] > var["flipout"] > var["exemplar"], var


# ------------------------------------------------------------------------------ Bayesian linear regression
def test_vi_on_bayesian_linear_regression_recovers_the_exact_posterior_mean_and_mean_field_variances():
    x, y, g = _linear_problem(20, n=64, d=3)
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]  # correlated inputs: the posterior is far from diagonal
    n, reps = x.shape[0], 64
    net = nn.Linear(3, 1, bias=False).double()
    q = MeanFieldGaussian(dict(net.named_parameters()), generator=g)  # BayesAdapter init: psi in [-6, -5]
    prior = GaussianPrior(0.3 * torch.ones(3, dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64),
                          torch.tensor([[0.6, -0.4, 0.3]], dtype=torch.float64), names=["weight"], shapes=[(1, 3)])
    prior = prior.rescale(2.0)
    # exact posterior: precision P = Sigma^-1 + X^T X / s2, mean P^-1 (Sigma^-1 m + X^T y / s2)
    prec_prior = torch.linalg.inv(prior.covariance())
    prec = prec_prior + x.T @ x / NOISE_VAR
    mean_exact = torch.linalg.solve(prec, prec_prior @ prior.mean + x.T @ y / NOISE_VAR)
    var_mean_field = 1.0 / torch.diagonal(prec)  # the mean-field optimum for a Gaussian posterior
    var_marginal = torch.diagonal(torch.linalg.inv(prec))
    assert float((var_marginal / var_mean_field).max()) > 2.0  # the two answers are far apart here
    kl = PriorKL(prior)
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    steps = 1000
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    gen = torch.Generator().manual_seed(21)
    # the data set repeated 64 times under exemplar reparameterisation: the mean NLL averages 64 independent
    # draws per example (same expectation, 1/64 of the variance of one draw)
    x_rep, y_rep = x.repeat(reps, 1), y.repeat(reps)
    for _ in range(steps):
        nll = _gauss_nll(sampled_forward(net, q, x_rep, mode="exemplar", generator=gen), y_rep)
        loss = negative_elbo(nll, q.kl(kl), n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    mu, var = q.mu[0].detach().reshape(-1), q.sigmas()[0].detach().reshape(-1).square()
    # tolerances: mean within 2 % of the exact posterior standard deviation, variances within 5 % (relative);
    # measured over 4 seeds (data and draws): <= 0.7 % and <= 1.9 %
    assert torch.all((mu - mean_exact).abs() <= 0.02 * var_marginal.sqrt()), (mu, mean_exact)
    assert torch.allclose(var, var_mean_field, rtol=0.05), (var, var_mean_field)


# ------------------------------------------------------------------------------ prediction
def test_prediction_averages_samples_and_mean_helpers():
    net = _small_net().eval()
    q = MeanFieldGaussian(dict(net.named_parameters()), psi_init=(-1.0, -1.0))
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    probs = predict_probs_sampled(net, q, x, samples=7, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    ref = sum(sampled_forward(net, q, x, mode="shared", generator=gen).softmax(-1) for _ in range(7)) / 7
    assert torch.allclose(probs, ref.detach(), atol=1e-12)
    assert torch.allclose(probs.sum(-1), torch.ones(4, dtype=torch.float64))
    load_sample_into(net, q, torch.Generator().manual_seed(8))
    assert not torch.equal(net[0].weight, q.mu[0])
    load_mean_into(net, q)
    assert torch.equal(net[0].weight, q.mu[0]) and torch.allclose(net(x), sampled_forward(net, q, x, mode="mean"))
