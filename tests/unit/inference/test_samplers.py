"""SGLD and SGHMC recover an anisotropic Gaussian target at several temperatures; the cyclical schedule."""

import math

import pytest
import torch

from bayes_transfer.inference.samplers import SGHMC, SGLD, CyclicalSchedule

D = 10
N = 50  # "training-set size": the optimizer sees gradients of U / N


def target(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    eig = torch.logspace(-0.6, 0.6, D, dtype=torch.float64)  # variances 0.25 .. 4: anisotropic
    cov = q @ torch.diag(eig) @ q.T
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    return mean, cov


def run_chains(make_opt, temperature, steps, chains=500, seed=1):
    """Independent chains as rows of one parameter; U(theta) = 1/2 (theta-m)^T P (theta-m) per chain."""
    mean, cov = target()
    prec = torch.linalg.inv(cov)
    theta = torch.nn.Parameter(mean.repeat(chains, 1).clone())
    opt = make_opt([theta], temperature)
    gen = torch.Generator().manual_seed(seed)
    kept = []
    for t in range(steps):
        opt.zero_grad()
        r = theta - mean
        u = 0.5 * ((r @ prec) * r).sum()  # sum over chains of U; each row's gradient is its own
        (u / N).backward()
        opt.step(generator=gen)
        if t >= steps // 2 and t % 10 == 0:
            kept.append(theta.detach().clone())
    return torch.cat(kept), mean, cov


@pytest.mark.parametrize("temperature", [1.0, 0.1])
@pytest.mark.parametrize(
    "name,make_opt",
    [
        ("sgld", lambda p, T: SGLD(p, lr=0.5, num_data=N, temperature=T)),
        ("sghmc", lambda p, T: SGHMC(p, lr=0.05, num_data=N, momentum=0.9, temperature=T)),
    ],
)
def test_sampler_recovers_gaussian_target(name, make_opt, temperature):
    """Stationary distribution is N(mean, T * cov): mean within 0.05 sd, covariance within 8% (Frobenius)."""
    samples, mean, cov = run_chains(make_opt, temperature, steps=3000)
    emp_mean = samples.mean(0)
    emp_cov = torch.cov(samples.T)
    target_cov = temperature * cov
    sd = target_cov.diagonal().sqrt()
    assert torch.all((emp_mean - mean).abs() / sd < 0.05), (emp_mean - mean) / sd
    rel = torch.linalg.norm(emp_cov - target_cov) / torch.linalg.norm(target_cov)
    assert rel < 0.08, f"{name} T={temperature}: relative covariance error {rel:.3f}"


def test_noise_off_is_gradient_descent():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SGLD([p], lr=0.1, num_data=10)
    p.grad = torch.tensor([0.5, 0.5])
    opt.step(noise=False)
    torch.testing.assert_close(p.detach(), torch.tensor([0.95, -2.05]))
    q = torch.nn.Parameter(torch.tensor([1.0]))
    opt = SGHMC([q], lr=0.1, num_data=10, momentum=0.5)
    for _ in range(2):
        q.grad = torch.tensor([1.0])
        opt.step(noise=False)
    # m1 = -0.1, q = 0.9; m2 = 0.5 * -0.1 - 0.1 = -0.15, q = 0.75
    torch.testing.assert_close(q.detach(), torch.tensor([0.75]))


def test_same_seed_same_chain():
    def chain():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.zeros(5))
        opt = SGHMC([p], lr=0.01, num_data=3)
        g = torch.Generator().manual_seed(3)
        for _ in range(20):
            p.grad = p.detach().clone()
            opt.step(generator=g)
        return p.detach()

    assert torch.equal(chain(), chain())


@pytest.mark.parametrize("kwargs", [dict(lr=0), dict(lr=0.1, num_data=0), dict(lr=0.1, temperature=-1)])
def test_sampler_argument_errors(kwargs):
    full = dict(lr=0.1, num_data=10) | kwargs
    with pytest.raises(ValueError):
        SGLD([torch.nn.Parameter(torch.zeros(1))], **full)


def test_cyclical_schedule():
    s = CyclicalSchedule(total_steps=100, cycles=4, exploration_fraction=0.6, samples_per_cycle=2)
    assert s.steps_per_cycle == 25 and s.exploration_steps == 15 and s.num_samples == 8
    assert s.lr_factor(0) == 1.0 and s.lr_factor(25) == 1.0
    assert math.isclose(s.lr_factor(12.5), 0.5 * (math.cos(math.pi * 0.5) + 1.0))
    assert s.is_exploring(0) and s.is_exploring(14) and not s.is_exploring(15) and s.is_exploring(25)
    steps = s.sample_steps()
    assert len(steps) == 8 and steps[1] == 24 and steps[-1] == 99
    assert all(not s.is_exploring(t) for t in steps)
    assert all(0 < s.lr_factor(t) < 1 for t in steps)
    with pytest.raises(ValueError, match="samples_per_cycle"):
        CyclicalSchedule(total_steps=10, cycles=1, exploration_fraction=0.9, samples_per_cycle=3)
