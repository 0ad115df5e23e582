"""A Gaussian prior attached to live parameters: the per-step form the training loops use.

:meth:`bayes_transfer.priors.gaussian.GaussianPrior.bind` builds a :class:`BoundPrior`; it cuts the prior's mean,
precision and low-rank factor into one block per parameter once, so a training step neither concatenates the
parameters nor builds an autograd graph for the prior term (:meth:`BoundPrior.add_grad_`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from bayes_transfer.priors.gaussian import LOG_2PI, GaussianPrior

__all__ = ["BoundPrior"]


class BoundPrior(nn.Module):
    """A :class:`GaussianPrior` attached to live parameters, for use in every training step.

    The prior's blocks are cut per parameter once, on the parameters' device and dtype: the mean, the
    precision 1/v, and G = F diag(1/v) as a contiguous (k, n_i) block, so a step never concatenates the
    parameters. With r = theta - mean, b = G r and C the float64 capacitance,

        -log p(theta) = const + 1/2 (r^T diag(1/v) r - b^T C^{-1} b),
        -grad log p(theta) = diag(1/v) r - G^T C^{-1} b.

    :meth:`log_prob` is differentiable (autograd); :meth:`add_grad_` adds the gradient of
    ``-scale * log p`` to ``p.grad`` directly, in two passes over G and no autograd graph: the fast path a
    training step uses. The constant (log-determinant) is included, so values equal ``GaussianPrior.log_prob``.
    """

    def __init__(self, prior: GaussianPrior, params: Mapping[str, nn.Parameter]):
        super().__init__()
        prior.check_params(params)
        self.prior = prior
        self.names = list(prior.names)
        self.params = [params[n] for n in self.names]
        self.rank = prior.rank
        ref = self.params[0]
        chol, logdet = prior._capacitance()
        # C^{-1} = L^{-T} L^{-1}; keep W = L^{-1} (k x k) so b^T C^{-1} b = |W b|^2
        eye = torch.eye(self.rank, dtype=torch.float64, device=chol.device)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False)
        self.register_buffer("whiten", whiten.to(ref.device))
        self.register_buffer("cap_inv", (whiten.T @ whiten).to(ref.device))
        self.const = float(-0.5 * (prior.dim * LOG_2PI + float(logdet)))
        self.means: list[Tensor] = []
        self.precs: list[Tensor] = []
        self.gfacs: list[Tensor] = []
        for p, m, v, f in zip(
            self.params,
            torch.split(prior.mean, prior.numels),
            torch.split(prior.variance, prior.numels),
            torch.split(prior.factor, prior.numels, dim=1),
        ):
            self.means.append(m.reshape(p.shape).to(p.device, p.dtype).clone())
            self.precs.append((1.0 / v).reshape(p.shape).to(p.device, p.dtype).clone())
            self.gfacs.append((f / v).to(p.device, p.dtype).contiguous())

    def _apply(self, fn, recurse=True):  # keep the per-block tensors on the module's device/dtype
        super()._apply(fn, recurse)
        self.means = [fn(t) for t in self.means]
        self.precs = [fn(t) for t in self.precs]
        self.gfacs = [fn(t) for t in self.gfacs]
        return self

    def log_prob(self) -> Tensor:
        """log p(theta) at the current parameter values (differentiable)."""
        quad_diag = 0.0
        b = None
        for p, m, prec, g in zip(self.params, self.means, self.precs, self.gfacs):
            r = p - m
            quad_diag = quad_diag + (r * r * prec).sum()
            if self.rank > 0:
                bi = g @ r.reshape(-1)
                b = bi if b is None else b + bi
        quad = torch.as_tensor(quad_diag).double()
        if b is not None:
            quad = quad - (self.whiten @ b.double()).square().sum()
        out = self.const - 0.5 * quad
        if not torch.isfinite(out):
            raise FloatingPointError(
                "prior log-density is not finite (parameters diverged or the prior is degenerate)"
            )
        return out.to(self.params[0].dtype)

    forward = log_prob

    @torch.no_grad()
    def add_grad_(self, scale: float = 1.0) -> None:
        """``p.grad += scale * d(-log p)/dp`` for every bound parameter (no autograd graph)."""
        residuals = torch._foreach_sub([p.detach() for p in self.params], self.means)
        if self.rank > 0:
            b = torch.zeros(self.rank, dtype=torch.float64, device=self.whiten.device)
            for g, r in zip(self.gfacs, residuals):
                b += torch.mv(g, r.reshape(-1)).double()
            c = (self.cap_inv @ b).to(self.params[0].dtype) * scale
            if not torch.all(torch.isfinite(c)):
                raise FloatingPointError("prior gradient is not finite (parameters diverged)")
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        torch._foreach_mul_(residuals, self.precs)
        torch._foreach_add_(grads, residuals, alpha=scale)
        if self.rank > 0:
            for grad, g in zip(grads, self.gfacs):
                if grad.is_contiguous():
                    grad.view(-1).addmv_(g.t(), c, alpha=-1.0)
                else:  # e.g. a channels-last convolution weight: G's columns follow the logical order
                    grad.sub_(torch.mv(g.t(), c).view(grad.shape))
