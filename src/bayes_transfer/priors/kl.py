"""KL(q || p) from a mean-field Gaussian q to a Gaussian prior p, in closed form.

q = N(mu_q, diag(s_q^2)) (s_q is the standard deviation) and p = N(mu_p, Sigma) with
Sigma = diag(v) + F^T F (F: k x d, the form of a :class:`~bayes_transfer.priors.gaussian.GaussianPrior`):

    KL(q || p) = 1/2 [ tr(Sigma^{-1} S_q) + r^T Sigma^{-1} r - d + log det Sigma - sum log s_q^2 ],   r = mu_q - mu_p.

With G = F diag(1/v) (k x d) and the k x k capacitance C = I + F diag(1/v) F^T = L L^T, Woodbury gives
Sigma^{-1} = diag(1/v) - G^T C^{-1} G and the determinant lemma log det Sigma = sum log v + log det C, so

    tr(Sigma^{-1} S_q) = sum_j s_j^2 (1/v_j - w_j),   w_j = |L^{-1} g_j|^2   (g_j: column j of G),
    r^T Sigma^{-1} r   = r^T diag(1/v) r - |L^{-1} G r|^2.

The prior's share (w, L, log det Sigma) is computed once by :class:`PriorKL`; each evaluation then costs
O(d k) and never forms a d x d matrix. Sums are accumulated in float64 (columns are cast in chunks, so no
float64 copy of the whole k x d factor is kept), and the result is a float64 scalar, differentiable in mu_q
and s_q by autograd. ``mu_q`` and ``s_q`` are flat (d,) tensors or, for a :class:`GaussianPrior`, dicts of
named tensors in the prior's order.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError

__all__ = ["PriorKL", "kl_diag_lowrank", "kl_diag_isotropic", "kl_to_prior"]

_CHUNK = 1 << 22  # elements of the k x d factor cast to float64 at a time


def _flat(x: Tensor | Mapping[str, Tensor], prior: GaussianPrior | None, what: str) -> Tensor:
    if isinstance(x, Mapping):
        if prior is None:
            raise TypeError(f"{what}: a dict of named tensors needs a GaussianPrior (for the names)")
        return prior.flatten(x)
    x = torch.as_tensor(x)
    if x.dim() != 1:
        raise ValueError(f"{what} must be a flat (d,) tensor, got shape {tuple(x.shape)}")
    return x


def _check_std(s_q: Tensor) -> None:
    if not torch.all(s_q.detach() > 0):
        raise ValueError("KL: the standard deviations s_q of q must all be > 0")


class PriorKL:
    """KL(q || p) for a fixed prior p = N(mean, diag(variance) + factor^T factor); call as ``kl(mu_q, s_q)``.

    Build once per prior (and per rescaling lambda: pass ``prior.rescale(lam)``) and call in every training
    step. The float64 prior terms live on the prior's device; move them with :meth:`to`.
    """

    def __init__(self, prior: GaussianPrior | None = None, *, mean: Tensor | None = None,
                 variance: Tensor | None = None, factor: Tensor | None = None) -> None:
        if prior is None:
            if mean is None or variance is None:
                raise TypeError("PriorKL needs a GaussianPrior or mean= and variance= (and optionally factor=)")
            prior = GaussianPrior(torch.as_tensor(mean), torch.as_tensor(variance), factor)
        self.prior = prior
        self.dim, self.rank = prior.dim, prior.rank
        self.mean = prior.mean
        var64 = prior.variance.double()
        self.inv_var = 1.0 / var64
        chol, logdet = prior._capacitance()  # float64 Cholesky of C and log det Sigma (determinant lemma)
        self.chol, self.logdet = chol, logdet
        self.gfac = prior.factor / prior.variance  # G = F diag(1/v), k x d, in the prior's dtype
        # diagonal of Sigma^{-1}: 1/v - w, w_j = |L^{-1} g_j|^2
        self.diag_precision = self.inv_var.clone()
        for sl in self._chunks():
            white = torch.linalg.solve_triangular(chol, self.gfac[:, sl].double(), upper=False)
            self.diag_precision[sl] -= white.square().sum(0)

    def _chunks(self):
        if self.rank == 0:
            return
        step = max(1, _CHUNK // self.rank)
        for start in range(0, self.dim, step):
            yield slice(start, start + step)

    def to(self, device) -> "PriorKL":
        for name in ("mean", "inv_var", "chol", "logdet", "gfac", "diag_precision"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, mu_q: Tensor | Mapping[str, Tensor], s_q: Tensor | Mapping[str, Tensor]) -> Tensor:
        mu = _flat(mu_q, self.prior, "mu_q")
        s = _flat(s_q, self.prior, "s_q")
        if mu.numel() != self.dim or s.numel() != self.dim:
            raise PriorMismatchError(
                f"KL: q has {mu.numel()} means and {s.numel()} standard deviations, the prior has d = {self.dim}"
            )
        _check_std(s)
        var_q = s.double().square()
        r = mu.double() - self.mean.to(mu.device).double()
        trace = (var_q * self.diag_precision).sum()
        quad = (r.square() * self.inv_var).sum()
        if self.rank > 0:
            b = torch.zeros(self.rank, dtype=torch.float64, device=r.device)
            for sl in self._chunks():
                b = b + self.gfac[:, sl].double() @ r[sl]
            quad = quad - torch.linalg.solve_triangular(self.chol, b[:, None], upper=False).square().sum()
        out = 0.5 * (trace + quad - self.dim + self.logdet - torch.log(var_q).sum())
        if not torch.isfinite(out):
            raise FloatingPointError("KL(q || p) is not finite (q diverged or the prior is degenerate)")
        return out


def kl_diag_lowrank(mu_q: Tensor, s_q: Tensor, mu_p: Tensor, variance_p: Tensor,
                    factor_p: Tensor | None = None) -> Tensor:
    """KL(N(mu_q, diag(s_q^2)) || N(mu_p, diag(variance_p) + factor_p^T factor_p)) on flat tensors."""
    return PriorKL(mean=mu_p, variance=variance_p, factor=factor_p)(mu_q, s_q)


def kl_diag_isotropic(mu_q: Tensor, s_q: Tensor, mu_p: Tensor | float = 0.0, alpha: float = 1.0) -> Tensor:
    """KL(N(mu_q, diag(s_q^2)) || N(mu_p, alpha I)) (alpha: the prior variance), float64 scalar.

    ``mu_q`` and ``s_q`` are flat tensors or dicts/lists of tensors (summed over all of them); ``mu_p`` is a
    scalar or a tensor (or dict/list) of the same shape.
    """
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"KL: the isotropic prior variance alpha must be finite and > 0, got {alpha!r}")
    def as_list(x):
        if isinstance(x, Mapping):
            return list(x.values())
        return [x] if torch.is_tensor(x) else list(x)

    mus, sds = as_list(mu_q), as_list(s_q)
    mps = [float(mu_p)] * len(mus) if isinstance(mu_p, (int, float)) else as_list(mu_p)
    if not len(mus) == len(sds) == len(mps):
        raise ValueError("KL: mu_q, s_q and mu_p must hold the same number of tensors")
    total = torch.zeros((), dtype=torch.float64, device=mus[0].device)
    count = 0
    log_alpha = math.log(alpha)
    for m, s, mp in zip(mus, sds, mps):
        if m.shape != s.shape:
            raise ValueError(f"KL: mu_q has shape {tuple(m.shape)} but s_q has {tuple(s.shape)}")
        _check_std(s)
        var_q = s.double().square()
        r = m.double() - (torch.as_tensor(mp).to(m.device).double() if not isinstance(mp, float) else mp)
        total = total + ((var_q + r.square()) / alpha - torch.log(var_q)).sum()
        count += m.numel()
    out = 0.5 * (total + count * (log_alpha - 1.0))
    if not torch.isfinite(out):
        raise FloatingPointError("KL(q || p) is not finite (q diverged)")
    return out


def kl_to_prior(mu_q: Tensor | Mapping[str, Tensor], s_q: Tensor | Mapping[str, Tensor],
                prior: GaussianPrior) -> Tensor:
    """KL(q || prior) for a :class:`GaussianPrior` (any rank; rescale the prior first for lambda * Sigma).

    For repeated use in a training loop build a :class:`PriorKL` once instead.
    """
    return PriorKL(prior)(mu_q, s_q)
