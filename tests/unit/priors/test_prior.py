"""GaussianPrior: densities against dense references, rescale/truncate semantics, sampling, files, errors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError


def random_prior(d=12, k=4, seed=0, dtype=torch.float64, names=None, shapes=None):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=dtype)
    var = torch.rand(d, generator=g, dtype=dtype) * 0.9 + 0.1
    fac = torch.randn(k, d, generator=g, dtype=dtype) * 0.7
    return GaussianPrior(mean, var, fac, names, shapes)


def dense_logpdf(prior, x):
    mvn = torch.distributions.MultivariateNormal(prior.mean.double(), prior.covariance().double())
    return mvn.log_prob(x.double())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [0, 1, 5])
def test_log_prob_matches_dense_mvn(seed, k):
    prior = random_prior(d=15, k=k, seed=seed)
    x = torch.randn(7, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed))
    torch.testing.assert_close(prior.log_prob(x), dense_logpdf(prior, x), rtol=1e-6, atol=0)
    # after rescale and truncate too (float64, relative 1e-6)
    for p in (prior.rescale(3.7), prior.rescale(1e6), prior.truncate(min(k, 2)), prior.truncate(0, "first")):
        torch.testing.assert_close(p.log_prob(x), dense_logpdf(p, x), rtol=1e-6, atol=0)


def test_log_prob_gradient_matches_precision():
    prior = random_prior(d=10, k=3, seed=1)
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    prior.log_prob(x).backward()
    expected = -torch.linalg.solve(prior.covariance(), (x - prior.mean).detach())
    torch.testing.assert_close(x.grad, expected, rtol=1e-8, atol=1e-10)


def _three_tensor_prior(seed: int):
    """A rank-3 prior over three named tensors (12 coordinates), a point ``x`` and ``x`` as parameters."""
    names, shapes = ["a.weight", "a.bias", "b.weight"], [(2, 3), (2,), (4,)]
    prior = random_prior(d=12, k=3, seed=seed, names=names, shapes=shapes)
    x = torch.randn(12, dtype=torch.float64)
    return names, prior, x, {n: torch.nn.Parameter(t.clone()) for n, t in prior.unflatten(x).items()}


def test_log_prob_dict_and_bound_prior_agree_with_flat():
    names, prior, x, params = _three_tensor_prior(seed=2)
    flat_lp = prior.log_prob(x)
    torch.testing.assert_close(prior.log_prob(params), flat_lp, rtol=1e-10, atol=0)
    bound = prior.bind(params)
    lp = bound.log_prob()
    torch.testing.assert_close(lp, flat_lp, rtol=1e-10, atol=0)
    lp.backward()
    grad = torch.cat([params[n].grad.reshape(-1) for n in names])
    expected = -torch.linalg.solve(prior.covariance(), x - prior.mean)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-10)


def test_rescale_is_exactly_lambda_times_covariance():
    prior = random_prior(seed=3)
    for lam in (1.0, 2.5, 1e3, 1e9):
        torch.testing.assert_close(prior.rescale(lam).covariance(), lam * prior.covariance(), rtol=1e-12, atol=0)
    # the authors' convention: variance * lam + eps and factor * lam (low-rank part scales by lam^2)
    pb = prior.rescale(10.0, convention="priorbox", eps=0.1)
    expected = torch.diag(prior.variance * 10 + 0.1) + 100 * prior.factor.T @ prior.factor
    torch.testing.assert_close(pb.covariance(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", [0, -1.0, float("nan"), float("inf")])
def test_rescale_rejects_bad_lambda(lam):
    with pytest.raises(ValueError, match="lambda"):
        random_prior().rescale(lam)


def test_truncate_svd_keeps_top_directions():
    # factor with known orthogonal directions of decreasing scale
    d = 9
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    scales = torch.tensor([0.5, 3.0, 1.0, 2.0], dtype=torch.float64)
    factor = scales[:, None] * q[:, :4].T  # rows are scaled orthonormal directions, not sorted
    prior = GaussianPrior(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64), factor)
    t2 = prior.truncate(2, how="svd")
    lowrank = t2.factor.T @ t2.factor
    expected = 9.0 * torch.outer(q[:, 1], q[:, 1]) + 4.0 * torch.outer(q[:, 3], q[:, 3])
    torch.testing.assert_close(lowrank, expected, rtol=1e-10, atol=1e-10)
    # how="first" keeps the first stored rows
    torch.testing.assert_close(prior.truncate(2, how="first").factor, factor[:2])
    # truncating to the full rank with svd keeps the covariance
    torch.testing.assert_close(prior.truncate(4).covariance(), prior.covariance(), rtol=1e-10, atol=1e-12)


def test_rank_zero_is_exactly_diagonal():
    prior = random_prior(seed=5)
    for how in ("svd", "first"):
        p0 = prior.truncate(0, how=how)
        assert p0.rank == 0
        cov = p0.covariance()
        assert torch.equal(cov, torch.diag(prior.variance))
        assert torch.equal(p0.variance, prior.variance)


@pytest.mark.parametrize("rank", [-1, 5])
def test_truncate_rejects_bad_rank(rank):
    with pytest.raises(ValueError, match="rank"):
        random_prior(k=4).truncate(rank)


@pytest.mark.parametrize("lam", [1.0, 50.0])
def test_samples_pass_chi_square_test_of_quadratic_form(lam):
    """(x - mu)^T Sigma^-1 (x - mu) of samples is chi-square with d degrees of freedom."""
    d = 20
    prior = random_prior(d=d, k=6, seed=6).rescale(lam)
    x = prior.sample(4000, generator=torch.Generator().manual_seed(7))
    r = x - prior.mean
    q = (r * torch.linalg.solve(prior.covariance(), r.T).T).sum(1).numpy()
    ks = stats.kstest(q, stats.chi2(df=d).cdf)
    assert ks.pvalue > 1e-3, ks
    # and the sample covariance is close to the covariance (Frobenius, relative 10%)
    emp = torch.cov(x.T)
    rel = torch.linalg.norm(emp - prior.covariance()) / torch.linalg.norm(prior.covariance())
    assert rel < 0.1


def test_save_load_roundtrip_is_identical(tmp_path):
    prior = random_prior(d=12, k=3, seed=8, dtype=torch.float32, names=["w", "b"], shapes=[(3, 3), (3,)])
    prior.metadata.update(arch="toy", source_task="digits 0-4", loss="cross_entropy", rank=3)
    path = tmp_path / "p.pt"
    prior.save(path)
    back = GaussianPrior.load(path)
    for attr in ("mean", "variance", "factor"):
        assert torch.equal(getattr(back, attr), getattr(prior, attr))
    assert back.names == prior.names and back.shapes == prior.shapes
    assert back.metadata == prior.metadata
    assert not (tmp_path / "p.pt.tmp").exists()


def test_load_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not a bayes_transfer.GaussianPrior"):
        GaussianPrior.load(tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GaussianPrior.load(tmp_path / "missing.pt")


def test_priorbox_roundtrip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    model[1].running_mean.add_(1.0)  # buffers present in the state dict, never in the prior
    state = {k: v for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    d = sum(p.numel() for p in model.parameters())
    prefix = tmp_path / "released" / "resnet_test"
    (tmp_path / "released").mkdir()
    mean = torch.randn(d)
    var = torch.rand(d) + 0.01
    covmat = torch.randn(5, d) / 2.0  # R x d, already divided by sqrt(R-1)
    for suffix, t in (("mean", mean), ("variance", var), ("covmat", covmat), ("model", state)):
        torch.save(t, f"{prefix}_{suffix}.pt")
    prior = GaussianPrior.from_priorbox(prefix)
    assert prior.names == names
    assert torch.equal(prior.mean, mean) and torch.equal(prior.variance, var) and torch.equal(prior.factor, covmat)
    assert prior.metadata["source"] == "priorbox" and prior.rank == 5
    # and back out through our exporter, then in again
    prior.to_priorbox(tmp_path / "again" / "p", model_state=state)
    again = GaussianPrior.from_priorbox(tmp_path / "again" / "p")
    for attr in ("mean", "variance", "factor"):
        assert torch.equal(getattr(again, attr), getattr(prior, attr))
    assert again.names == prior.names and again.shapes == prior.shapes


def test_priorbox_missing_files_are_listed(tmp_path):
    with pytest.raises(FileNotFoundError, match="_covmat.pt"):
        GaussianPrior.from_priorbox(tmp_path / "nothing")


def test_binding_to_mismatching_model_names_first_bad_parameter():
    a = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    params = dict(a.named_parameters())
    prior = GaussianPrior.isotropic(params, 1.0)
    prior.bind(params)  # fits
    b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 3))
    with pytest.raises(PriorMismatchError, match=r"'1\.weight'.*\(2, 4\).*\(3, 4\)"):
        prior.bind(dict(b.named_parameters()))
    c = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Identity(), torch.nn.Linear(4, 2))
    with pytest.raises(PriorMismatchError, match=r"'1\.weight'.*'2\.weight'"):
        prior.bind(dict(c.named_parameters()))


def test_non_finite_log_density_raises():
    prior = random_prior(d=5, k=1)
    with pytest.raises(FloatingPointError, match="not finite"):
        prior.log_prob(torch.full((5,), float("nan"), dtype=torch.float64))
    params = {"theta": torch.nn.Parameter(torch.full((5,), float("inf"), dtype=torch.float64))}
    with pytest.raises(FloatingPointError, match="not finite"):
        prior.bind(params).log_prob()


def test_invalid_variance_rejected():
    with pytest.raises(ValueError, match="variance must be finite and > 0"):
        GaussianPrior(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))


def test_isotropic_priors():
    lin = torch.nn.Linear(3, 2)
    params = dict(lin.named_parameters())
    zero = GaussianPrior.isotropic(params, 0.5)
    assert torch.equal(zero.mean, torch.zeros(8)) and torch.allclose(zero.variance, torch.full((8,), 0.5))
    centred = GaussianPrior.isotropic(params, 0.5, centred_at_params=True)
    torch.testing.assert_close(centred.mean, torch.cat([lin.weight.detach().reshape(-1), lin.bias.detach()]))
    x = torch.randn(8, dtype=torch.float64)
    expected = stats.multivariate_normal(np.zeros(8), 0.5 * np.eye(8)).logpdf(x.numpy())
    assert math.isclose(float(zero.to(torch.float64).log_prob(x)), expected, rel_tol=1e-9)


def test_bound_prior_fast_gradient_equals_autograd():
    names, prior, x, params = _three_tensor_prior(seed=9)
    bound = prior.bind(params)
    (-0.25 * bound.log_prob()).backward()
    auto = [params[n].grad.clone() for n in names]
    for p in params.values():
        p.grad = torch.ones_like(p)  # add_grad_ accumulates onto existing gradients
    bound.add_grad_(0.25)
    for n, a in zip(names, auto):
        torch.testing.assert_close(params[n].grad, a + 1.0, rtol=1e-10, atol=1e-12)
