"""KL(q || p) for a diagonal q and a diagonal-plus-low-rank p: against torch's dense MultivariateNormal KL."""

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError
from bayes_transfer.priors.kl import PriorKL, kl_diag_isotropic, kl_diag_lowrank, kl_to_prior

D, K = 50, 5


def _case(seed, d=D, k=K, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mu_q = torch.randn(d, generator=g, dtype=dtype)
    s_q = 0.1 + torch.rand(d, generator=g, dtype=dtype)
    mu_p = torch.randn(d, generator=g, dtype=dtype)
    var_p = 0.05 + torch.rand(d, generator=g, dtype=dtype)
    fac_p = 0.5 * torch.randn(k, d, generator=g, dtype=dtype)
    return mu_q, s_q, mu_p, var_p, fac_p


def _dense_kl(mu_q, s_q, mu_p, cov_p):
    q = MultivariateNormal(mu_q, covariance_matrix=torch.diag(s_q.square()))
    return kl_divergence(q, MultivariateNormal(mu_p, covariance_matrix=cov_p))


@pytest.mark.parametrize("seed", range(5))
def test_lowrank_kl_equals_dense_torch_kl(seed):
    mu_q, s_q, mu_p, var_p, fac_p = _case(seed)
    ours = kl_diag_lowrank(mu_q, s_q, mu_p, var_p, fac_p)
    ref = _dense_kl(mu_q, s_q, mu_p, torch.diag(var_p) + fac_p.T @ fac_p)
    assert ours.dtype == torch.float64
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("lam,convention", [(1.0, "exact"), (7.5, "exact"), (300.0, "exact"), (3.0, "priorbox")])
def test_kl_to_a_rescaled_gaussian_prior(lam, convention):
    mu_q, s_q, mu_p, var_p, fac_p = _case(11)
    prior = GaussianPrior(mu_p, var_p, fac_p).rescale(lam, convention=convention)
    ref = _dense_kl(mu_q, s_q, mu_p, prior.covariance())
    if convention == "exact":  # lambda multiplies the whole covariance
        assert torch.allclose(prior.covariance(), lam * (torch.diag(var_p) + fac_p.T @ fac_p))
    assert float(kl_to_prior(mu_q, s_q, prior)) == pytest.approx(float(ref), rel=1e-6)
    assert float(PriorKL(prior)(mu_q, s_q)) == pytest.approx(float(ref), rel=1e-6)


def test_rank_zero_and_named_dict_inputs():
    mu_q, s_q, mu_p, var_p, _ = _case(3)
    prior = GaussianPrior(mu_p, var_p, None, names=["a", "b"], shapes=[(5, 4), (30,)])
    ref = _dense_kl(mu_q, s_q, mu_p, torch.diag(var_p))
    named_mu, named_s = prior.unflatten(mu_q), prior.unflatten(s_q)
    assert float(kl_to_prior(named_mu, named_s, prior)) == pytest.approx(float(ref), rel=1e-6)
    with pytest.raises(PriorMismatchError):
        kl_to_prior({"b": named_mu["b"], "a": named_mu["a"]}, named_s, prior)


def test_isotropic_kl_equals_dense_torch_kl():
    mu_q, s_q, mu_p, _, _ = _case(5)
    for alpha in (0.01, 1.0, 40.0):
        ref = _dense_kl(mu_q, s_q, mu_p, alpha * torch.eye(D, dtype=torch.float64))
        assert float(kl_diag_isotropic(mu_q, s_q, mu_p, alpha)) == pytest.approx(float(ref), rel=1e-6)
    ref0 = _dense_kl(mu_q, s_q, torch.zeros(D, dtype=torch.float64), 2.0 * torch.eye(D, dtype=torch.float64))
    # zero-mean prior, q given as a list of parameter tensors
    ours = kl_diag_isotropic([mu_q[:20].reshape(4, 5), mu_q[20:]], [s_q[:20].reshape(4, 5), s_q[20:]], 0.0, 2.0)
    assert float(ours) == pytest.approx(float(ref0), rel=1e-6)


def test_gradients_match_autograd_of_the_dense_kl():
    mu_q, s_q, mu_p, var_p, fac_p = _case(7)
    prior = GaussianPrior(mu_p, var_p, fac_p).rescale(4.0)
    kl = PriorKL(prior)
    m1, s1 = mu_q.clone().requires_grad_(), s_q.clone().requires_grad_()
    g_ours = torch.autograd.grad(kl(m1, s1), (m1, s1))
    m2, s2 = mu_q.clone().requires_grad_(), s_q.clone().requires_grad_()
    g_ref = torch.autograd.grad(_dense_kl(m2, s2, mu_p, prior.covariance()), (m2, s2))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    # and against finite differences of our own closed form
    assert torch.autograd.gradcheck(lambda m, s: kl(m, s), (m1.detach().requires_grad_(), s1.detach().requires_grad_()))


def test_float32_prior_is_accumulated_in_float64():
    mu_q, s_q, mu_p, var_p, fac_p = _case(9)
    prior32 = GaussianPrior(mu_p.float(), var_p.float(), fac_p.float())
    ref = _dense_kl(mu_q, s_q, prior32.mean.double(), prior32.covariance().double())
    ours = kl_to_prior(mu_q.float(), s_q.float(), prior32)
    assert ours.dtype == torch.float64
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)  # q's float32 rounding only


def test_bad_inputs_are_rejected_with_clear_errors():
    mu_q, s_q, mu_p, var_p, fac_p = _case(1)
    with pytest.raises(ValueError, match="s_q"):
        kl_diag_lowrank(mu_q, -s_q, mu_p, var_p, fac_p)
    with pytest.raises(PriorMismatchError, match="d = 50"):
        kl_diag_lowrank(mu_q[:10], s_q[:10], mu_p, var_p, fac_p)
    with pytest.raises(ValueError, match="alpha"):
        kl_diag_isotropic(mu_q, s_q, 0.0, 0.0)
