"""Learning the prior by Bayes by Backprop over a source objective (BYOV, Turishcheva et al. 2023).

A mean-field Gaussian q(w) = N(mu, diag(sigma^2)) over the feature extractor (backbone) is fitted to the
source loss L (cross-entropy, SimCLR, or BYOL for BYOV) by minimising the generalised negative ELBO per
source example,

    E_q[ L_batch(w) ] + beta_t * KL(q || p) / N,

i.e. the generalised posterior p(w) exp(-N L(w)) at beta = 1 (Bissiri et al.; Knoblauch et al.). Per BYOV:
sigma^2 = exp(psi) with log sigma^2 initialised at -10 (``log_var_init``), mu at the starting checkpoint,
weight decay off (the KL is the only regulariser), beta annealed from 0 to ``beta_end`` by a one-cycle cosine
(:func:`beta_schedule`; over ``anneal_steps``, then constant), one weight draw per mini-batch (``samples``
draws averaged when > 1) and the prior p = N(0, alpha I) (``prior="zero"``) or N(mu_teacher, alpha I)
(``prior="teacher"``: the objective's EMA target encoder when it has one, i.e. BYOL, otherwise the starting
weights), alpha = ``prior_variance`` = 1. The model's other parameters (a supervised head) and the objective's
(projector, predictor) are trained as point estimates alongside, and never enter the prior.

The result is a diagonal (rank-0) :class:`~bayes_transfer.priors.gaussian.GaussianPrior` N(mu, diag(sigma^2))
over the backbone's named parameters, in the same file format as a SWAG prior, with metadata saying how it was
learned (``metadata["prior_method"] == "bbb"``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from bayes_transfer import __version__
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.inference.loop import BatchStream
from bayes_transfer.inference.samplers import cosine_factor, set_lr
from bayes_transfer.inference.variational import MeanFieldGaussian, load_mean_into, sampled_forward
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.kl import kl_diag_isotropic

log = logging.getLogger("bayes_transfer.priors.bbb")

__all__ = ["BBBConfig", "beta_schedule", "learn_bbb_prior"]

PRIOR_KINDS = ("zero", "teacher")


@dataclass
class BBBConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 over the run) or "constant"
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9); weight decay is always off
    beta_end: float = 1.0
    anneal_steps: int = 0  # beta's one-cycle cosine 0 -> beta_end takes this many steps; 0: the whole run
    prior: str = "zero"  # "zero": N(0, prior_variance I); "teacher": N(mu_teacher, prior_variance I)
    prior_variance: float = 1.0
    log_var_init: float = -10.0
    samples: int = 1  # weight draws averaged per step (1: Bayes by Backprop's single draw)
    reparameterisation: str = "shared"  # see bayes_transfer.inference.variational.sampled_forward
    num_data: int = 0  # N of the KL / N scaling; 0: the size of the source training set

    def check(self) -> None:
        for key in ("steps", "batch_size", "samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"bbb.{key} must be >= 1, got {getattr(self, key)!r}")
        if self.prior not in PRIOR_KINDS:
            raise ValueError(f"bbb.prior must be one of {PRIOR_KINDS}, got {self.prior!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"bbb.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"bbb.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not (self.lr > 0 and self.prior_variance > 0 and self.beta_end >= 0):
            raise ValueError("bbb.lr and bbb.prior_variance must be > 0 and bbb.beta_end >= 0")
        if self.anneal_steps < 0 or self.num_data < 0:
            raise ValueError("bbb.anneal_steps and bbb.num_data must be >= 0")


def beta_schedule(step: int, anneal_steps: int, beta_end: float) -> float:
    """One-cycle cosine from 0 (step 0) to ``beta_end`` (step >= ``anneal_steps``)."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return float(beta_end)
    return float(beta_end) * (1.0 - cosine_factor(step, anneal_steps))


def learn_bbb_prior(model: nn.Module, objective: nn.Module, source_train: Dataset, cfg: BBBConfig, *,
                    seed: int = 0, device="cpu", metadata: dict | None = None,
                    runtime: RuntimeOptions | None = None) -> tuple[GaussianPrior, list[dict]]:
    """Fit q over ``model``'s backbone to ``objective`` (``loss = objective(model, x, y)``) by Bayes by Backprop.

    Returns the prior (diagonal, rank 0, over the backbone's names) and a history of logged steps.
    ``model`` is modified in place: it ends holding the posterior mean mu (and the BatchNorm statistics
    accumulated under the sampled weights). An objective with ``update_target`` (BYOL) gets an EMA step towards
    mu after every optimiser step.
    """
    cfg.check()
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    torch.manual_seed(seed)
    model = runtime.prepare_model(model.to(device)).train()
    objective.to(device).train()
    backbone, rest = split_named_parameters(model)
    gen = torch.Generator().manual_seed(seed + 7919)
    q = MeanFieldGaussian(backbone, parameterisation="log_var",
                          psi_init=(cfg.log_var_init, cfg.log_var_init)).to(device)
    start_mean = [m.detach().clone() for m in q.mu]
    own = objective.trainable_parameters() if hasattr(objective, "trainable_parameters") else [
        p for p in objective.parameters() if p.requires_grad]
    params = list(q.parameters()) + list(rest.values()) + list(own)
    opt = (torch.optim.Adam(params, lr=cfg.lr, weight_decay=0.0) if cfg.optimizer == "adam"
           else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=0.0))
    n_data = cfg.num_data or len(source_train)
    anneal = cfg.anneal_steps or cfg.steps
    stream = BatchStream(source_train, cfg.batch_size, torch.Generator().manual_seed(seed), device, runtime)
    call = lambda m, x, y: objective(m, x, y)  # noqa: E731
    history, log_every = [], max(1, cfg.steps // 20)
    for step in range(cfg.steps):
        lr = cfg.lr * (cosine_factor(step, cfg.steps) if cfg.lr_schedule == "cosine" else 1.0)
        set_lr(opt, lr)
        beta = beta_schedule(step, anneal, cfg.beta_end)
        xb, yb = next(stream)
        xb = runtime.prepare_input(xb)
        with runtime.autocast_context(device):
            data = sum(sampled_forward(model, q, xb, yb, mode=cfg.reparameterisation, generator=gen, call=call)
                       for _ in range(cfg.samples)) / cfg.samples
        if cfg.prior == "teacher":
            target = objective.target_params() if hasattr(objective, "target_params") else None
            mu_p = [target[n] for n in q.names] if target is not None else start_mean
        else:
            mu_p = 0.0
        kl = kl_diag_isotropic(list(q.mu), q.sigmas(), mu_p, cfg.prior_variance)
        loss = data + (beta / n_data) * kl.to(data.dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(objective, "update_target"):
            objective.update_target(q.mean_dict())
        if step % log_every == 0 or step == cfg.steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"Bayes by Backprop diverged at step {step}: loss {value}")
            history.append({"step": step, "lr": lr, "beta": beta, "loss": value, "data_loss": float(data.detach()),
                            "kl": float(kl.detach())})
            log.info("bbb step %d/%d loss %.4f kl %.4g beta %.3g", step, cfg.steps, value, float(kl.detach()), beta)
    load_mean_into(model, q)
    meta = {
        "prior_method": "bbb",
        "source_loss": getattr(objective, "kind", type(objective).__name__),
        "bbb": asdict(cfg) | {"num_data": n_data, "anneal_steps": anneal},
        "kl_prior": {"kind": cfg.prior, "variance": cfg.prior_variance},
        "rank": 0,
        "library_version": __version__,
    }
    meta.update(metadata or {})
    return q.to_prior(metadata=meta), history
