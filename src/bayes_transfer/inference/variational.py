"""Mean-field Gaussian variational inference over named parameters (BayesAdapter's Bayesian fine-tuning).

:class:`MeanFieldGaussian` holds q(w) = N(mu, diag(sigma^2)) over a set of a model's parameters (the
backbone; the rest of the model, e.g. a new head, stays a point estimate trained as usual). ``mu`` starts
at the given (pre-trained) values, ``psi`` uniformly in ``psi_init``. Three parameterisations of sigma:

* ``"log_std"``: sigma = exp(psi), BayesAdapter's (Deng et al.; psi initialised in [-6, -5]);
* ``"log_var"``: sigma = exp(psi / 2), BYOV's log sigma^2 (initialised at -10);
* ``"softplus"``: sigma = log(1 + exp(psi)), Blundell et al.'s Bayes by Backprop.

The loss is the negative ELBO per training example, ``mean NLL + beta * KL(q || p) / N``
(:func:`negative_elbo`), with the KL in closed form from :mod:`bayes_transfer.priors.kl` (to a rescaled learned
prior lambda * Sigma, diagonal plus low rank, or an isotropic prior). The expected NLL is estimated by the
reparameterisation trick in one of three ways (:func:`sampled_forward`):

* ``"exemplar"`` (BayesAdapter's exemplar reparameterisation): example i of the mini-batch gets its own draw
  w_i = mu + sigma * eps_i. Convolutions run as one grouped convolution (groups = batch size), linear layers as
  a batched matrix product, BatchNorm's affine weight and bias per example (its statistics over the batch, as
  in the shared model). Same FLOPs as one shared draw, but the b sampled weight tensors of every layer are held
  for the backward pass: memory grows by b x (number of variational parameters). Supported: ``nn.Conv2d``
  (zero padding), ``nn.Linear``, BatchNorm; any other module with variational parameters raises.
* ``"shared"``: one draw for the whole mini-batch (Blundell et al.; BYOV). No extra memory, highest variance.
* ``"flipout"`` (Wen et al. 2018): one draw Delta = sigma * eps, decorrelated per example by random signs,
  w_i = mu + Delta o (s_i r_i^T); for convolutions and linear layers two ordinary products (2x the FLOPs of
  one, no per-example weights); BatchNorm's affine parameters get mu + Delta o s_i. Unbiased, lower variance than
  ``"shared"``, usually higher than ``"exemplar"``.

Predictions average the softmax of S draws (:func:`predict_probs_sampled`, or :func:`load_sample_into` plus the
project's Bayesian model average over whole evaluation sets).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.kl import PriorKL, kl_diag_isotropic

__all__ = [
    "PARAMETERISATIONS", "REPARAMETERISATIONS", "MeanFieldGaussian", "sampled_forward", "negative_elbo",
    "predict_probs_sampled", "load_sample_into", "load_mean_into",
]

PARAMETERISATIONS = ("log_std", "log_var", "softplus")
REPARAMETERISATIONS = ("exemplar", "shared", "flipout", "mean")


def _randn(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, dtype=like.dtype, device=generator.device, generator=generator).to(like.device)


def _signs(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = like.device if generator is None else generator.device
    s = torch.randint(0, 2, shape, device=dev, generator=generator).to(device=like.device, dtype=like.dtype)
    return 2.0 * s - 1.0


class MeanFieldGaussian(nn.Module):
    """q(w) = N(mu, diag(sigma(psi)^2)) over named parameters; ``mu`` and ``psi`` are the trainable parameters.

    ``params``: the parameters to make variational (name -> tensor, e.g. a model's backbone); their values
    become ``mu``. ``psi_init = (lo, hi)``: psi ~ Uniform(lo, hi) (lo == hi gives a constant).
    """

    def __init__(self, params: Mapping[str, Tensor], *, parameterisation: str = "log_std",
                 psi_init: tuple[float, float] = (-6.0, -5.0), generator: torch.Generator | None = None) -> None:
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
        lo, hi = (float(v) for v in psi_init)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"psi_init must be a finite range (lo, hi) with lo <= hi, got {psi_init!r}")
        if not params:
            raise ValueError("MeanFieldGaussian needs at least one parameter")
        self.parameterisation, self.psi_init = parameterisation, (lo, hi)
        self.names = list(params)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.mu = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        psis = []
        for m in self.mu:
            u = torch.rand(m.shape, generator=generator, dtype=torch.float64).to(m.device, m.dtype)
            psis.append(nn.Parameter(lo + (hi - lo) * u))
        self.psi = nn.ParameterList(psis)
        self._kl_cache: tuple[int, PriorKL] | None = None

    @property
    def dim(self) -> int:
        return sum(m.numel() for m in self.mu)

    def sigmas(self) -> list[Tensor]:
        if self.parameterisation == "log_std":
            return [p.exp() for p in self.psi]
        if self.parameterisation == "log_var":
            return [(0.5 * p).exp() for p in self.psi]
        return [F.softplus(p) for p in self.psi]

    def mean_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.mu))

    def sigma_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.sigmas()))

    def sample(self, batch: int | None = None, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One draw (``batch=None``) or ``batch`` independent draws stacked on a leading axis (differentiable)."""
        out = {}
        for n, m, s in zip(self.names, self.mu, self.sigmas()):
            shape = m.shape if batch is None else (batch, *m.shape)
            out[n] = m + s * _randn(shape, m, generator)
        return out

    def kl(self, prior: GaussianPrior | PriorKL | float) -> Tensor:
        """KL(q || prior), float64, closed form. ``prior``: a (rescaled) GaussianPrior over exactly these
        parameters, a prebuilt :class:`PriorKL`, or a float alpha for the zero-mean isotropic N(0, alpha I)."""
        if isinstance(prior, (int, float)):
            return kl_diag_isotropic(list(self.mu), self.sigmas(), 0.0, float(prior))
        if isinstance(prior, GaussianPrior):
            if self._kl_cache is None or self._kl_cache[0] is not prior:
                if prior.names != self.names or prior.shapes != self.shapes:
                    prior.check_params(self.mean_dict())
                self._kl_cache = (prior, PriorKL(prior).to(self.mu[0].device))
            prior = self._kl_cache[1]
        mu = torch.cat([m.reshape(-1) for m in self.mu])
        sd = torch.cat([s.reshape(-1) for s in self.sigmas()])
        return prior(mu, sd)

    def to_prior(self, metadata: dict | None = None) -> GaussianPrior:
        """q as a diagonal (rank-0) :class:`GaussianPrior` with the parameters' names and shapes."""
        with torch.no_grad():
            mean = torch.cat([m.detach().reshape(-1).float().cpu() for m in self.mu])
            var = torch.cat([s.detach().reshape(-1).double().square().float().cpu() for s in self.sigmas()])
        var = var.clamp_min(torch.finfo(torch.float32).tiny)
        meta = {"kind": "mean_field", "parameterisation": self.parameterisation, "psi_init": list(self.psi_init)}
        meta.update(metadata or {})
        return GaussianPrior(mean, var, None, self.names, self.shapes, meta)


# ---------------------------------------------------------------------------------------------- forwards
class _Call(nn.Module):
    def __init__(self, model: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.model, *args)


def _batch_norm_normalise(m: _BatchNorm, x: Tensor) -> Tensor:
    """BatchNorm without its affine part, with the module's running-statistics bookkeeping."""
    factor = 0.0 if m.momentum is None else m.momentum
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        factor = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
    use_batch = m.training or (m.running_mean is None and m.running_var is None)
    keep = not m.training or m.track_running_stats
    return F.batch_norm(x, m.running_mean if keep else None, m.running_var if keep else None, None, None,
                        use_batch, factor, m.eps)


def _per_example(t: Tensor, x: Tensor) -> Tensor:  # (b, C) -> broadcastable against x of shape (b, C, ...)
    return t.reshape(t.shape[0], t.shape[1], *([1] * (x.dim() - 2)))


def _module_forward(m: nn.Module, mode: str, var: dict[str, tuple[Tensor, Tensor]], b: int,
                    gen: torch.Generator | None) -> Callable:
    """A forward for module ``m`` whose parameters ``var`` (attr -> (mu, sigma)) are drawn per example."""
    if not isinstance(m, (nn.Conv2d, nn.Linear, _BatchNorm)):
        raise NotImplementedError(
            f"{mode} reparameterisation supports nn.Conv2d, nn.Linear and BatchNorm, not {type(m).__name__}; "
            "use mode='shared' for this model"
        )
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise NotImplementedError(f"{mode} reparameterisation needs zero padding, got {m.padding_mode!r}")
    if mode == "exemplar":
        draws = {a: mu + sd * _randn((b, *mu.shape), mu, gen) for a, (mu, sd) in var.items()}
    else:  # flipout: one draw of the perturbation, signs per example
        delta = {a: sd * _randn(mu.shape, mu, gen) for a, (mu, sd) in var.items()}
        ref = next(iter(var.values()))[0]
        n_out = m.weight.shape[0] if not isinstance(m, _BatchNorm) else m.num_features
        s_out = _signs((b, n_out), ref, gen)
        s_in = None if isinstance(m, _BatchNorm) else _signs((b, m.weight.shape[1] * getattr(m, "groups", 1)), ref, gen)

    def fixed(a: str) -> Tensor | None:
        return var[a][0] if a in var else getattr(m, a)

    def check(x: Tensor) -> None:
        if x.shape[0] != b:
            raise ValueError(f"{mode} reparameterisation was drawn for a batch of {b}, got input {tuple(x.shape)}")

    def exemplar(a: str) -> Tensor | None:
        if a in draws:
            return draws[a]
        p = getattr(m, a)
        return None if p is None else p.unsqueeze(0).expand(b, *p.shape)

    def forward(x: Tensor) -> Tensor:
        check(x)
        if isinstance(m, _BatchNorm):
            if mode == "exemplar":
                w, bias = exemplar("weight"), exemplar("bias")
            else:
                w = fixed("weight") + (delta["weight"] * s_out if "weight" in delta else 0.0)
                bias = fixed("bias") + (delta["bias"] * s_out if "bias" in delta else 0.0)
                w, bias = w.expand(b, -1), bias.expand(b, -1)
            return _batch_norm_normalise(m, x) * _per_example(w, x) + _per_example(bias, x)
        if mode == "exemplar":
            w, bias = exemplar("weight"), exemplar("bias")
            if isinstance(m, nn.Linear):
                y = torch.einsum("b...i,boi->b...o", x, w)
                return y if bias is None else y + bias.reshape(b, *([1] * (x.dim() - 2)), -1)
            y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *w.shape[2:]),
                         None if bias is None else bias.reshape(-1), m.stride, m.padding, m.dilation, m.groups * b)
            return y.reshape(b, -1, *y.shape[2:])
        # flipout
        if isinstance(m, nn.Linear):
            shape = (b, *([1] * (x.dim() - 2)), -1)
            y = F.linear(x, fixed("weight"), fixed("bias"))
            if "weight" in delta:
                y = y + F.linear(x * s_in.reshape(shape), delta["weight"]) * s_out.reshape(shape)
            return y + delta["bias"] * s_out.reshape(shape) if "bias" in delta else y
        y = m._conv_forward(x, fixed("weight"), fixed("bias"))
        if "weight" in delta:
            y = y + m._conv_forward(x * _per_example(s_in, x), delta["weight"], None) * _per_example(s_out, y)
        return y + delta["bias"][None, :, None, None] * _per_example(s_out, y) if "bias" in delta else y

    return forward


@contextlib.contextmanager
def _patched(model: nn.Module, q: MeanFieldGaussian, mode: str, b: int,
             gen: torch.Generator | None) -> Iterator[None]:
    owners: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    for name, mu, sd in zip(q.names, q.mu, q.sigmas()):
        prefix, _, attr = name.rpartition(".")
        owners.setdefault(prefix, {})[attr] = (mu, sd)
    patched = []
    try:
        for prefix, var in owners.items():
            module = model.get_submodule(prefix)
            if "forward" in vars(module):
                raise RuntimeError(f"module {prefix!r} already has a patched forward")
            module.forward = _module_forward(module, mode, var, b, gen)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def sampled_forward(model: nn.Module, q: MeanFieldGaussian, *inputs: Tensor, mode: str = "exemplar",
                    generator: torch.Generator | None = None, call: Callable | None = None):
    """``call(model, *inputs)`` (default ``model(*inputs)``) with q's parameters drawn by ``mode``.

    ``mode``: ``"exemplar"``, ``"shared"``, ``"flipout"`` (see the module docstring) or ``"mean"`` (w = mu).
    q's names must be parameter names of ``model``; all other parameters and buffers are the model's own.
    Differentiable in q's mu and psi.
    """
    if mode not in REPARAMETERISATIONS:
        raise ValueError(f"mode must be one of {REPARAMETERISATIONS}, got {mode!r}")
    call = call or (lambda m, *a: m(*a))
    if mode in ("shared", "mean"):
        weights = q.sample(generator=generator) if mode == "shared" else q.mean_dict()
        return functional_call(_Call(model, call), {f"model.{n}": w for n, w in weights.items()}, inputs,
                               strict=False)
    with _patched(model, q, mode, inputs[0].shape[0], generator):
        return call(model, *inputs)


def negative_elbo(nll: Tensor, kl: Tensor, num_data: int, beta: float = 1.0) -> Tensor:
    """Negative ELBO per training example: ``nll + beta * KL / N`` (``nll``: the mini-batch mean NLL).

    Its gradient is an unbiased estimate of the gradient of -ELBO / N over the full data set.
    """
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise ValueError(f"num_data must be a positive int (the number of training examples), got {num_data!r}")
    return nll + (beta / num_data) * kl.to(nll.dtype)


@torch.no_grad()
def predict_probs_sampled(model: nn.Module, q: MeanFieldGaussian, x: Tensor, samples: int = 20, *,
                          mode: str = "shared", generator: torch.Generator | None = None) -> Tensor:
    """Softmax probabilities averaged over ``samples`` draws of q (equal weights), shape (b, classes)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    total = None
    for _ in range(samples):
        p = sampled_forward(model, q, x, mode=mode, generator=generator).softmax(-1).double()
        total = p if total is None else total + p
    return total / samples


@torch.no_grad()
def load_sample_into(model: nn.Module, q: MeanFieldGaussian, generator: torch.Generator | None = None) -> None:
    """Write one draw of q into the model's own parameters (for evaluating a whole set with one sample)."""
    params = dict(model.named_parameters())
    for n, w in q.sample(generator=generator).items():
        params[n].copy_(w)


@torch.no_grad()
def load_mean_into(model: nn.Module, q: MeanFieldGaussian) -> None:
    """Write q's mean into the model's own parameters."""
    params = dict(model.named_parameters())
    for n, m in zip(q.names, q.mu):
        params[n].copy_(m)
