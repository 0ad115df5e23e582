"""Updates that let a stiff Gaussian prior bind without diverging, and without changing the target.

The mean per-datum potential is ``U(theta)/N = L(theta) + 1/(2N) (theta - mu)^T Sigma^{-1} (theta - mu)`` with
``Sigma = D + F^T F`` (the rescaled prior: ``D = diag(lambda v)``, ``F = sqrt(lambda) F``). A SWAG prior has
coordinates with variance at the floor (~1e-8), whose curvature ``c = 1/(N lambda v)`` is far above
``2 / lr``: explicit SGD, SGLD and SGHMC diverge there for every practical step size. By Woodbury,

    Sigma^{-1} / N = C - W,   C = D^{-1} / N (diagonal),   W = D^{-1} F^T (I + F D^{-1} F^T)^{-1} F D^{-1} / N,

with ``W`` positive semi-definite and ``0 <= C - W <= C`` (Loewner order). All stiffness is in ``C``; the
low-rank remainder ``-W`` only *softens*. So the diagonal part is treated exactly and the rest explicitly:

* ``p.grad`` holds the data gradient plus the low-rank remainder ``-W (theta - mu)``
  (:func:`add_low_rank_grad_`; ``BoundPrior.add_grad_`` would add the whole prior gradient);
* the optimizers below take the diagonal part ``(mu, c)`` per parameter (:func:`diagonal_part`) and fold
  the group's ``weight_decay`` (a zero-mean diagonal Gaussian) into it: ``c + wd``, mean ``c mu / (c + wd)``.

**SGD** (:class:`ProximalSGD`): the diagonal quadratic is evaluated at the *new* point (implicit Euler, the
proximal step), ``theta <- (theta - lr g_rest + lr c mu) / (1 + lr c)`` per coordinate; momentum and Nesterov
as in ``torch.optim.SGD`` with the diagonal gradient taken at the new point. A fixed point has zero total
gradient, so the MAP is unchanged. Stability for a quadratic with data Hessian ``0 <= H <= L``: with
``A = I + lr C`` the plain step's iteration matrix ``A^{-1} (I - lr (H - W))`` is similar to
``A^{-1/2} (I - lr H + lr W) A^{-1/2}``, which is ``<= I - lr A^{-1/2} (C - W + H) A^{-1/2} < I`` (since
``W <= C``) and ``> -I`` when ``lr L < 2``: stable for every prior stiffness as soon as SGD on the data term
alone is. (Per coordinate with momentum m: stable whenever ``lr h < 2 (1 + m)``, whatever ``c``.)

**SGLD** (:class:`ExponentialSGLD`): the diagonal Ornstein-Uhlenbeck part is integrated exactly over the
step with the rest of the gradient held fixed (exponential integrator):
``theta <- theta - a (theta - mu) - lr phi(lr c) g_rest + sqrt(2 lr T phi(2 lr c) / N) xi`` with
``a = 1 - exp(-lr c)`` and ``phi(x) = (1 - exp(-x)) / x``. For ``c -> 0`` this is SGLD; for a stiff coordinate
it draws from the prior's marginal ``N(mu, T/(N c))`` in one step. The diagonal Gaussian alone is sampled
exactly at any step size; with the data term the bias is SGLD's O(lr L), and the fixed point of the noiseless
step is the MAP. Stable (noiseless, quadratic) when ``lr L < 1``, whatever ``c``.

**SGHMC** (:class:`PreconditionedSGHMC`): a constant diagonal preconditioner ``M = 1 / (1 + kappa c)``,
``kappa = reference_lr / max_prior_step``, on the full gradient (``g_rest + c (theta - mu)``):
``v <- m v - lr M g + sqrt(2 (1 - m) lr T M / N) xi``, ``theta <- theta + v``. This is SGHMC with the
constant mass matrix ``eps^2 / (lr M)`` and friction proportional to it; for a constant (theta-independent)
preconditioner the correction term of Ma, Chen & Fox (2015), ``Gamma_i = sum_j d(M)_ij / d theta_j``, is
zero, so ``exp(-U/T)`` stays the stationary law in the small-step limit and no correction term is needed.
The prior's per-step curvature becomes ``lr M c <= max_prior_step`` (for ``lr <= reference_lr``; the
remainder ``-W`` only lowers it), so heavy-ball stays stable; the discretisation bias on a stiff coordinate is
O(max_prior_step) instead of divergence. ``momentum=0`` gives preconditioned SGLD; ``noise=False``
preconditioned heavy-ball SGD (same MAP).

**The authors' device** (METHOD_NOTES §5b), kept for comparison; it changes the target: the prior
rescaled as ``variance * lambda + eps`` (eps 0.1) and ``factor * lambda`` (:func:`authors_prior`), and the
gradient norm of all parameters clipped to 2 before every step (:func:`clip_gradient_norm_`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor
from torch.optim import Optimizer

from bayes_transfer.inference.samplers import _check, closure_loss
from bayes_transfer.priors.bound import BoundPrior
from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["AUTHORS_PRIOR_EPS", "AUTHORS_CLIP_NORM", "diagonal_part", "add_low_rank_grad_", "ProximalSGD",
           "ExponentialSGLD", "PreconditionedSGHMC", "low_rank_share", "authors_prior", "clip_gradient_norm_",
           "prior_energy_per_datum"]

#: the authors' ``prior_eps``, added to the rescaled variance
AUTHORS_PRIOR_EPS = 0.1
#: the authors' gradient-norm clip (``clip_val=2`` in priorBox's sghmc_model.py)
AUTHORS_CLIP_NORM = 2.0

Diagonal = Mapping[Tensor, tuple[Tensor, Tensor]]


def diagonal_part(bound: BoundPrior, scale: float) -> dict[Tensor, tuple[Tensor, Tensor]]:
    """The prior's diagonal part per bound parameter: ``{param: (mean, c)}``, ``c = scale / v``
    (``scale = 1 / N`` for the mean per-datum potential)."""
    return {p: (m, prec * float(scale)) for p, m, prec in zip(bound.params, bound.means, bound.precs)}


@torch.no_grad()
def add_low_rank_grad_(bound: BoundPrior, scale: float = 1.0) -> None:
    """``p.grad += scale * (-G^T C^{-1} G (theta - mu))``: the prior's gradient *without* its diagonal part
    ``diag(1/v) (theta - mu)`` (``G = F diag(1/v)``, ``C`` the capacitance). Nothing for a rank-0 prior."""
    for p in bound.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if bound.rank == 0:
        return
    b = torch.zeros(bound.rank, dtype=torch.float64, device=bound.whiten.device)
    for g, p, m in zip(bound.gfacs, bound.params, bound.means):
        b += torch.mv(g, (p.detach() - m).reshape(-1)).double()
    c = (bound.cap_inv @ b).to(bound.params[0].dtype) * float(scale)
    if not torch.all(torch.isfinite(c)):
        raise FloatingPointError("prior gradient is not finite (parameters diverged)")
    for p, g in zip(bound.params, bound.gfacs):
        p.grad.sub_(torch.mv(g.t(), c).view(p.shape))


@torch.no_grad()
def low_rank_share(bound: BoundPrior) -> float:
    """``max_j W_jj / C_jj``: how much of a coordinate's diagonal precision the low-rank remainder cancels.

    :class:`ExponentialSGLD` samples a stiff coordinate with variance ``T / (N c_j)`` where the exact
    conditional variance is ``T / (N (c_j - W_jj + ...))``: its relative bias there is about this share.
    Independent of lambda; small for a SWAG prior over many coordinates (the embedded default's priors:
    0.019 supervised, 0.0012 SimCLR), large for a few coordinates that the low-rank part dominates.
    O(d k^2), no d x d matrix.
    """
    if bound.rank == 0:
        return 0.0
    worst = 0.0
    for g, prec in zip(bound.gfacs, bound.precs):
        w = (bound.whiten.to(g.dtype) @ g).square().sum(0)
        worst = max(worst, float((w / prec.reshape(-1)).max()))
    return worst


def _diag_of(p: Tensor, diagonal: Diagonal, weight_decay: float) -> tuple[Tensor | float, Tensor | float]:
    """(mean, c) of the parameter's diagonal Gaussian term, the group's weight decay folded in."""
    if p in diagonal:
        mu, c = diagonal[p]
        if weight_decay:
            c_all = c + weight_decay
            return mu * (c / c_all), c_all
        return mu, c
    return 0.0, float(weight_decay)


class _DiagonalOptimizer(Optimizer):
    def __init__(self, params, defaults: dict, diagonal: Diagonal | None):
        if not defaults["lr"] > 0:
            raise ValueError(f"lr must be > 0, got {defaults['lr']!r}")
        super().__init__(params, defaults)
        self.diagonal = dict(diagonal or {})
        known = {p for g in self.param_groups for p in g["params"]}
        if any(p not in known for p in self.diagonal):
            raise ValueError("diagonal: a parameter with a prior term is not among the optimised parameters")

    def _terms(self, group):
        for p in group["params"]:
            if p.grad is not None:
                yield p, p.grad, *_diag_of(p, self.diagonal, group["weight_decay"])


class ProximalSGD(_DiagonalOptimizer):
    """SGD (momentum/Nesterov as ``torch.optim.SGD``) with the diagonal Gaussian term taken implicitly.

    ``p.grad`` = data gradient + low-rank remainder; see the module docstring. Without a diagonal part and
    weight decay it is ``torch.optim.SGD``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 diagonal: Diagonal | None = None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay),
                         diagonal)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, m = group["lr"], group["momentum"]
            for p, g, mu, c in self._terms(group):
                state = self.state[p]
                buf = state.get("momentum_buffer") if m else None
                k = (1.0 + m) if (m and group["nesterov"]) else 1.0  # weight of this step's gradient
                z = p - lr * k * g
                if buf is not None:
                    z -= lr * (m * m if group["nesterov"] else m) * buf
                new = (z + (lr * k) * c * mu) / (1.0 + (lr * k) * c)
                if m:
                    g_total = g + c * (new - mu)
                    state["momentum_buffer"] = g_total.clone() if buf is None else buf.mul_(m).add_(g_total)
                p.copy_(new)
        return loss


class _Sampler(_DiagonalOptimizer):
    def __init__(self, params, defaults: dict, diagonal):
        _check(defaults["lr"], defaults["num_data"], defaults["temperature"])
        super().__init__(params, defaults | {"noise": True}, diagonal)

    @torch.no_grad()
    def step(self, closure=None, noise: bool | None = None, generator: torch.Generator | None = None):
        """One update; ``noise=False`` skips the injected noise (exploration), ``generator`` seeds it."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            add_noise = (group["noise"] if noise is None else noise) and group["temperature"] > 0
            for p, g, mu, c in self._terms(group):
                xi = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) if add_noise else None
                self._update(p, g, mu, c, group, xi)
        return loss


def _phi(x: Tensor) -> Tensor:
    """(1 - exp(-x)) / x, 1 at x = 0 (stable for tiny x through expm1)."""
    return torch.where(x > 0, -torch.expm1(-x) / x.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(x))


class ExponentialSGLD(_Sampler):
    """SGLD with the diagonal Gaussian term integrated exactly (exponential integrator); targets exp(-U/T)."""

    def __init__(self, params, lr: float, num_data: int, temperature: float = 1.0, weight_decay: float = 0.0,
                 diagonal: Diagonal | None = None):
        super().__init__(params, dict(lr=lr, num_data=num_data, temperature=temperature,
                                      weight_decay=weight_decay), diagonal)

    def _update(self, p, g, mu, c, group, xi) -> None:
        lr = group["lr"]
        a = torch.as_tensor(c, dtype=p.dtype, device=p.device) * lr
        decay = -torch.expm1(-a)
        p.sub_(decay * (p - mu) + lr * _phi(a) * g)
        if xi is not None:
            p.add_(xi * (2.0 * lr * group["temperature"] / group["num_data"] * _phi(2.0 * a)).sqrt())


class PreconditionedSGHMC(_Sampler):
    """SGHMC (momentum form) with the constant preconditioner ``1 / (1 + kappa c)``; see the module docstring.

    ``reference_lr`` (default: ``lr`` at construction, the schedule's peak) and ``max_prior_step`` fix kappa;
    they must not change during a chain (the preconditioner is constant by construction).
    """

    def __init__(self, params, lr: float, num_data: int, momentum: float = 0.9, temperature: float = 1.0,
                 weight_decay: float = 0.0, diagonal: Diagonal | None = None, nesterov: bool = False,
                 reference_lr: float | None = None, max_prior_step: float = 0.05):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not max_prior_step > 0:
            raise ValueError(f"max_prior_step must be > 0, got {max_prior_step!r}")
        super().__init__(params, dict(lr=lr, num_data=num_data, momentum=momentum, temperature=temperature,
                                      weight_decay=weight_decay, nesterov=nesterov), diagonal)
        kappa = float(reference_lr if reference_lr is not None else lr) / max_prior_step
        self.preconditioner = {}
        for group in self.param_groups:
            for p in group["params"]:
                _, c = _diag_of(p, self.diagonal, group["weight_decay"])
                self.preconditioner[p] = 1.0 / (1.0 + kappa * torch.as_tensor(c, dtype=p.dtype, device=p.device))

    def _update(self, p, g, mu, c, group, xi) -> None:
        lr, m = group["lr"], group["momentum"]
        pre = self.preconditioner[p]
        step_g = pre * (g + c * (p - mu)) * lr
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"].mul_(m).sub_(step_g)
        kick = None
        if xi is not None:
            kick = xi * (2.0 * (1.0 - m) * lr * group["temperature"] / group["num_data"] * pre).sqrt()
            buf.add_(kick)
        if group["nesterov"]:  # as NesterovSGHMC: theta <- theta + xi + m v - lr M g
            if kick is not None:
                p.add_(kick)
            p.add_(buf, alpha=m).sub_(step_g)
        else:
            p.add_(buf)


def authors_prior(prior: GaussianPrior, prior_scale: float, eps: float = AUTHORS_PRIOR_EPS) -> GaussianPrior:
    """The authors' rescaling: variance * lambda + eps, factor * lambda (the low-rank part scales by lambda^2)."""
    return prior.rescale(prior_scale, convention="priorbox", eps=eps)


def clip_gradient_norm_(params: Iterable[Tensor], max_norm: float = AUTHORS_CLIP_NORM) -> float:
    """Rescale the gradients of ``params`` (data + prior, all together) to total 2-norm <= ``max_norm``,
    as the authors do before every sampler step; returns the norm before clipping. Not exact: a clipped
    gradient is not the potential's, so the target changes wherever the clip is active."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    return float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))


@torch.no_grad()
def prior_energy_per_datum(bound: BoundPrior, num_data: int) -> float:
    """``-log p(theta) / N`` at the bound parameters' current values (what a run records at its end)."""
    value = -float(bound.log_prob()) / num_data
    if not math.isfinite(value):
        raise FloatingPointError("prior energy is not finite")
    return value
