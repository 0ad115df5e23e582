"""Stiff priors that bind without diverging: a quadratic model with known MAP and posterior.

Data term (mean per datum): 1/2 (theta - a)^T H (theta - a), H with eigenvalues in [0.2, 1]; prior
N(mu, lambda (diag(v) + F^T F)) with v spanning 9 decades (1e-9 .. 1); N = 50. The MAP solves
(H + P) theta = H a + P mu with P = Sigma^{-1} / N, the posterior at T = 1 is N(MAP, (N (H + P))^{-1}).
"""

import math

import pytest
import torch
from torch import nn

from bayes_transfer.inference import prior_step as ps
from bayes_transfer.priors.gaussian import GaussianPrior

N = 50
LR = 0.5  # lr * max eig(H) = 0.5: plain SGD on the data term alone is stable
LAMBDAS = [10.0 ** e for e in range(9)]  # 1 .. 1e8


def _problem(d=12, k=2, factor_scale=0.7, decades=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = 10.0 ** torch.linspace(-decades, 0, d, dtype=torch.float64)
    # SWAG-like factor: each coordinate's low-rank part is comparable with its diagonal variance
    factor = factor_scale * torch.randn(k, d, generator=gen, dtype=torch.float64) * v.sqrt()
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    hess = q @ torch.diag(torch.linspace(0.2, 1.0, d, dtype=torch.float64)) @ q.T
    a = torch.randn(d, generator=gen, dtype=torch.float64)
    return GaussianPrior(mu, v, factor), hess, a


def _answers(prior, hess, a):
    prec = torch.linalg.inv(prior.covariance()) / N
    mean = torch.linalg.solve(hess + prec, hess @ a + prec @ prior.mean)
    return prec, mean, torch.linalg.inv(N * (hess + prec))


def _descend(prior, hess, a, make, split=True, steps=2000, noise_kw=None):
    theta = nn.Parameter(prior.mean.clone() + 0.1)
    bound = prior.bind({"theta": theta})
    opt = make([theta], bound)
    for _ in range(steps):
        theta.grad = hess @ (theta.detach() - a)
        (ps.add_low_rank_grad_ if split else type(bound).add_grad_)(bound, 1.0 / N)
        opt.step(**(noise_kw or {}))
        if not torch.all(torch.isfinite(theta)) or float(theta.detach().abs().max()) > 1e30:
            return None
    return theta.detach()


MAKERS = {
    "proximal SGD": (lambda p, b: ps.ProximalSGD(p, lr=LR, diagonal=ps.diagonal_part(b, 1 / N)), None),
    "proximal heavy ball": (lambda p, b: ps.ProximalSGD(p, lr=LR, momentum=0.9,
                                                        diagonal=ps.diagonal_part(b, 1 / N)), None),
    "proximal Nesterov": (lambda p, b: ps.ProximalSGD(p, lr=LR, momentum=0.9, nesterov=True,
                                                      diagonal=ps.diagonal_part(b, 1 / N)), None),
    "exponential SGLD, no noise": (lambda p, b: ps.ExponentialSGLD(p, lr=LR, num_data=N,
                                                                   diagonal=ps.diagonal_part(b, 1 / N)),
                                   {"noise": False}),
    "preconditioned SGHMC, no noise": (lambda p, b: ps.PreconditionedSGHMC(
        p, lr=LR, num_data=N, momentum=0.9, diagonal=ps.diagonal_part(b, 1 / N)), {"noise": False}),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_split_updates_reach_the_analytic_map_at_every_lambda(name):
    make, noise_kw = MAKERS[name]
    prior0, hess, a = _problem()
    for lam in LAMBDAS:
        prior = prior0.rescale(lam)
        _, star, _ = _answers(prior, hess, a)
        theta = _descend(prior, hess, a, make, noise_kw=noise_kw)
        assert theta is not None, f"{name} diverged at lambda {lam:g}"
        assert float((theta - star).norm() / star.norm()) < 1e-9, f"{name} at lambda {lam:g}"


def test_plain_sgd_at_the_same_lr_diverges_for_the_stiff_lambdas():
    prior0, hess, a = _problem()
    diverged = []
    for lam in LAMBDAS:
        prior = prior0.rescale(lam)
        prec, star, _ = _answers(prior, hess, a)
        stiffness = LR * float(torch.linalg.eigvalsh(hess + prec).max())  # > 2: gradient descent is unstable
        theta = _descend(prior, hess, a, lambda p, b: torch.optim.SGD(p, lr=LR), split=False)
        if theta is None:
            diverged.append(lam)
            assert stiffness > 2
        else:
            assert stiffness < 2 and float((theta - star).norm() / star.norm()) < 1e-9
    assert diverged == LAMBDAS[:7]  # lambda = 1 .. 1e6 diverge; 1e7 and 1e8 are soft enough


def test_the_remainder_only_softens_and_the_split_iteration_is_contracting():
    # Loewner order 0 <= W <= C (the proof's premise) and the spectral radius of the proximal iteration
    # A^{-1} (I - lr (H - W)), A = I + lr C, below 1 at every lambda
    prior0, hess, _ = _problem()
    for lam in LAMBDAS:
        prior = prior0.rescale(lam)
        prec, _, _ = _answers(prior, hess, torch.zeros(12, dtype=torch.float64))
        c = torch.diag(1.0 / (N * prior.variance))
        w = c - prec
        assert float(torch.linalg.eigvalsh(w).min()) > -1e-9 * float(c.max())
        assert float(torch.linalg.eigvalsh(prec).min()) > 0
        it = torch.linalg.solve(torch.eye(12, dtype=torch.float64) + LR * c,
                                torch.eye(12, dtype=torch.float64) - LR * (hess - w))
        assert float(torch.linalg.eigvals(it).abs().max()) < 1


def test_low_rank_remainder_is_the_prior_gradient_minus_its_diagonal():
    prior, _, _ = _problem()
    prior = prior.rescale(10.0)
    theta = nn.Parameter(prior.mean + torch.randn(12, generator=torch.Generator().manual_seed(1),
                                                  dtype=torch.float64))
    bound = prior.bind({"theta": theta})
    (-prior.log_prob(theta) / N).backward()
    full = theta.grad.clone()
    theta.grad = None
    ps.add_low_rank_grad_(bound, 1.0 / N)
    diag = (theta.detach() - prior.mean) / (N * prior.variance)
    assert torch.allclose(theta.grad + diag, full, rtol=1e-9, atol=1e-9 * float(full.abs().max()))


def test_without_a_prior_proximal_sgd_is_torch_sgd():
    gen = torch.Generator().manual_seed(2)
    for kw in ({}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}):
        x1 = nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))
        x2 = nn.Parameter(x1.detach().clone())
        o1, o2 = ps.ProximalSGD([x1], lr=0.1, **kw), torch.optim.SGD([x2], lr=0.1, **kw)
        for step in range(20):
            g = torch.randn(5, generator=gen, dtype=torch.float64)
            x1.grad, x2.grad = g.clone(), g.clone()
            o1.step()
            o2.step()
        assert torch.allclose(x1, x2, rtol=1e-12, atol=1e-14), kw


def _sample(prior, hess, a, make, lr, chains=2000, burn=3000, every=20, count=100, seed=1):
    """Run ``chains`` independent chains at once (parameters (chains, d)); the remainder from dense W."""
    prec, mean, cov = _answers(prior, hess, a)
    c = 1.0 / (N * prior.variance)
    w = torch.diag(c) - prec
    theta = nn.Parameter(prior.mean.expand(chains, -1).clone())
    opt = make([theta], {theta: (prior.mean, c)}, lr)
    gen, kept = torch.Generator().manual_seed(seed), []
    for step in range(burn + every * count):
        x = theta.detach()
        theta.grad = (x - a) @ hess - (x - prior.mean) @ w
        opt.step(generator=gen)
        if step >= burn and (step - burn) % every == every - 1:
            kept.append(theta.detach().clone())
    x = torch.cat(kept)
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False).T  # whitened: should be N(0, I)
    return float(z.mean(0).abs().max()), float((z.T @ z / len(z) - torch.eye(z.shape[1])).abs().max())


SAMPLERS = {
    # exact on the diagonal; its bias on a stiff coordinate is about the low-rank share (small factor here)
    "exponential SGLD": (lambda p, diag, lr: ps.ExponentialSGLD(p, lr=lr, num_data=N, diagonal=diag), 0.05),
    "preconditioned SGHMC": (lambda p, diag, lr: ps.PreconditionedSGHMC(p, lr=lr, num_data=N, momentum=0.9,
                                                                        diagonal=diag), 0.7),
    "preconditioned SGLD": (lambda p, diag, lr: ps.PreconditionedSGHMC(p, lr=lr, num_data=N, momentum=0.0,
                                                                       diagonal=diag), 0.7),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("lam", [1.0, 1e4])
def test_samplers_match_the_analytic_posterior_at_T_1(name, lam):
    # d = 6, variances over 8 decades; lr * c reaches 2e5 on the stiffest coordinate at lambda = 1.
    # Tolerances on the whitened samples z = L^{-1} (theta - mean) (L L^T the posterior covariance):
    # |mean(z)| < 0.03 and |cov(z) - I| < 0.05 entrywise (measured over the six cases: <= 0.013 and <= 0.024;
    # the sampling error of 200k correlated draws plus the O(lr) discretisation bias, lr = 0.01). With the
    # larger, SWAG-like factor (low-rank share 0.41) exponential SGLD's stiff-coordinate bias shows: 0.19.
    make, factor_scale = SAMPLERS[name]
    prior, hess, a = _problem(d=6, factor_scale=factor_scale, decades=8)
    prior = prior.rescale(lam)
    if name == "exponential SGLD":
        theta = nn.Parameter(prior.mean.clone())
        assert ps.low_rank_share(prior.bind({"theta": theta})) < 0.02
    mean_err, cov_err = _sample(prior, hess, a, make, lr=0.01)
    assert mean_err < 0.03 and cov_err < 0.05, (mean_err, cov_err)


def test_low_rank_share_matches_a_dense_computation():
    prior, _, _ = _problem(d=6, factor_scale=0.7, decades=8)
    prec = torch.linalg.inv(prior.covariance()) / N
    c = 1.0 / (N * prior.variance)
    dense = float(((torch.diag(c) - prec).diagonal() / c).max())
    bound = prior.bind({"theta": nn.Parameter(prior.mean.clone())})
    assert ps.low_rank_share(bound) == pytest.approx(dense, rel=1e-8)


def test_the_authors_device_is_stable_but_changes_the_answer():
    # variance * lambda + 0.1 and factor * lambda, explicit SGD with the gradient norm clipped to 2
    prior0, hess, a = _problem()
    lam = 1.0
    authors = ps.authors_prior(prior0, lam)
    assert torch.equal(authors.variance, prior0.variance * lam + ps.AUTHORS_PRIOR_EPS)
    assert torch.equal(authors.factor, prior0.factor * lam)
    theta = nn.Parameter(prior0.mean.clone() + 0.1)
    bound = authors.bind({"theta": theta})
    opt = torch.optim.SGD([theta], lr=LR)
    norms = []
    for _ in range(2000):
        theta.grad = hess @ (theta.detach() - a)
        bound.add_grad_(1.0 / N)
        norms.append(ps.clip_gradient_norm_([theta]))
        assert float(theta.grad.norm()) <= ps.AUTHORS_CLIP_NORM * (1 + 1e-12)
        opt.step()
    _, star_authors, _ = _answers(authors, hess, a)
    _, star_exact, _ = _answers(prior0.rescale(lam), hess, a)
    assert max(norms) > ps.AUTHORS_CLIP_NORM  # the clip was active at the start
    assert float((theta.detach() - star_authors).norm() / star_authors.norm()) < 1e-9  # its own MAP...
    assert float((star_authors - star_exact).norm() / star_exact.norm()) > 0.1  # ...is not the exact prior's


def test_prior_energy_per_datum_is_minus_log_prior_over_n():
    prior, _, _ = _problem()
    theta = nn.Parameter(prior.mean.clone() + 0.01)
    energy = ps.prior_energy_per_datum(prior.bind({"theta": theta}), N)
    assert energy == pytest.approx(-float(prior.log_prob(theta.detach())) / N, rel=1e-12)
    assert math.isfinite(energy)


def test_without_a_prior_the_samplers_are_the_library_samplers():
    from bayes_transfer.inference.samplers import SGHMC, SGLD, NesterovSGHMC

    pairs = [(lambda p: ps.ExponentialSGLD(p, lr=0.01, num_data=N), lambda p: SGLD(p, lr=0.01, num_data=N)),
             (lambda p: ps.PreconditionedSGHMC(p, lr=0.01, num_data=N, momentum=0.9),
              lambda p: SGHMC(p, lr=0.01, num_data=N, momentum=0.9)),
             (lambda p: ps.PreconditionedSGHMC(p, lr=0.01, num_data=N, momentum=0.9, nesterov=True),
              lambda p: NesterovSGHMC(p, lr=0.01, num_data=N, momentum=0.9))]
    for make_new, make_old in pairs:
        x1 = nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
        x2 = nn.Parameter(x1.detach().clone())
        o1, o2 = make_new([x1]), make_old([x2])
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        for step in range(30):
            x1.grad, x2.grad = x1.detach().clone(), x2.detach().clone()  # a quadratic data term
            o1.step(noise=step % 3 != 0, generator=g1)
            o2.step(noise=step % 3 != 0, generator=g2)
        assert torch.allclose(x1, x2, rtol=1e-12, atol=1e-14)
