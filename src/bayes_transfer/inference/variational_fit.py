"""The downstream fit of the variational methods (BayesAdapter): a mean-field Gaussian over the backbone.

:func:`fit_variational` is the counterpart of :func:`~bayes_transfer.inference.loop.fit` for
``vi_learned_prior`` and ``vi_isotropic_prior`` (:mod:`~bayes_transfer.inference.methods`). It minimises the
tempered negative ELBO per training example

    E_q[ mean cross-entropy ] + T * KL(q || p_backbone) / N + head_weight_decay / 2 * |theta_head|^2

over q = N(mu, diag(exp(psi)^2)) on the backbone (mu initialised at the pre-trained weights, psi ~ U(-6, -5):
:class:`~bayes_transfer.inference.variational.MeanFieldGaussian`), with the new head a point estimate. T is the
``temperature`` of the Bayesian methods (T = 1: the ELBO; T < 1: the cold posterior the SG-MCMC methods
target at the same T). p_backbone is the learned prior lambda * Sigma (diagonal plus low rank, closed-form KL
by Woodbury and the determinant lemma, :class:`~bayes_transfer.priors.kl.PriorKL`) or the zero-mean isotropic
N(0, alpha I).

The expected NLL is estimated by ``reparameterisation`` (:data:`DEFAULT_REPARAMETERISATION` unless the
hyper-parameters carry a ``vi_reparameterisation``): ``exemplar`` (a draw per example), ``flipout`` (one
draw, decorrelated by per-example signs; the cheaper documented option) or ``shared``. mu and the head follow
SGD with momentum at the fit's learning rate (cosine schedule, as the SGD methods); psi follows Adam
(:data:`PSI_LR`), as BayesAdapter does. Predictions average the softmax of S = ``cycles * samples_per_cycle``
draws of q (as many as the SG-MCMC methods' Bayesian model average keeps), each evaluated with the
BatchNorm statistics accumulated in training.

BayesAdapter's OOD regulariser (``vi_ood_weight`` alpha > 0; off by default): every step also draws a batch of
uniform-noise images over the training batch's pixel range and subtracts alpha times the batch mean of
``min(I(w, y | x), vi_ood_margin)`` (:func:`ood_margin`; MI from :data:`OOD_SAMPLES` = 2 draws, BayesAdapter's
gamma 0.75 and S = 2), so that OOD inputs get disagreeing predictions; the OOD forwards leave the BatchNorm
running statistics alone. It costs two more forward passes per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import fields
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from bayes_transfer.device import runtime_options
from bayes_transfer.inference.batches import BatchStream
from bayes_transfer.inference.loop import FitResult, Hyper, LoopHyper
from bayes_transfer.inference.samplers import set_lr
from bayes_transfer.inference.samples import Diverged, EvalSetAverage
from bayes_transfer.inference.schedules import cosine_lr
from bayes_transfer.inference.variational import (MeanFieldGaussian, REPARAMETERISATIONS, load_mean_into,
                                                  load_sample_into, negative_elbo, sampled_forward)
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.results.ood import entropy
from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["fit_variational", "prediction_samples", "ood_margin", "DEFAULT_REPARAMETERISATION", "PSI_INIT",
           "PSI_LR", "OOD_SAMPLES"]

#: BayesAdapter's exemplar reparameterisation (the default of ``Hyper.vi_reparameterisation``); "flipout" costs
#: ~0.4x as much per step on the CPU
DEFAULT_REPARAMETERISATION = next(f.default for f in fields(Hyper) if f.name == "vi_reparameterisation")
#: BayesAdapter's initialisation of psi = log sigma
PSI_INIT = (-6.0, -5.0)
#: Adam's learning rate for psi
PSI_LR = 1e-2


#: the draws of q that estimate the mutual information of an OOD batch (BayesAdapter: S = 2)
OOD_SAMPLES = 2


def ood_margin(logits: list, margin: float) -> torch.Tensor:
    """BayesAdapter's OOD term: the mean over the batch of ``min(I(w, y | x), margin)``, the mutual information
    between prediction and weights estimated from the draws' logits (``H[mean p] - mean H[p_s]``, nats);
    differentiable. The fit maximises it (``loss - vi_ood_weight * ood_margin``) so that OOD inputs get
    uncertain, disagreeing predictions, up to the margin and no further."""
    probs = torch.stack([F.softmax(z.float(), dim=-1) for z in logits])
    mi = entropy(probs.mean(0)) - entropy(probs).mean(0)
    return torch.clamp(mi, max=float(margin)).mean()


@contextlib.contextmanager
def _frozen_batchnorm_statistics(model: nn.Module):
    """BatchNorm layers normalise by the batch's statistics as in training but keep their running statistics
    (momentum 0), so the OOD batches never enter the statistics the predictions use."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m


def _uniform_noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A batch of uniform-noise images over the batch's pixel range (BayesAdapter's uniformly corrupted OOD
    batches), drawn on the CPU from ``generator``."""
    lo, hi = float(x.min()), float(x.max())
    return (lo + (hi - lo) * torch.rand(x.shape, generator=generator)).to(x.device, x.dtype)


def prediction_samples(hp: LoopHyper) -> int:
    """S, the draws of q averaged in a prediction: as many as the SG-MCMC methods' model average keeps."""
    return int(hp.cycles) * int(hp.samples_per_cycle)


def fit_variational(model: nn.Module, train_set: Dataset, *, hp: LoopHyper, eval_sets: Mapping[str, Dataset],
                    prior: GaussianPrior | float, seed: int = 0, device="cpu", desc: str = "vi",
                    keep_posterior: bool = False) -> FitResult:
    """Variational fine-tuning of ``model`` (pre-trained backbone, fresh head) on ``train_set``.

    ``prior``: a (rescaled) GaussianPrior over the backbone's names, or a float alpha for N(0, alpha I).
    Returns the S-sample predictive probabilities on ``eval_sets``; a non-finite loss or prediction gives
    ``success=False`` and its reason (the model then holds the last mean). ``keep_posterior``: the result's
    ``posterior`` holds the fitted q (the model's state dict at the means and the backbone's sigmas; after a
    success only), for SNR pruning.
    """
    mode = getattr(hp, "vi_reparameterisation", DEFAULT_REPARAMETERISATION)
    if mode not in REPARAMETERISATIONS or mode == "mean":
        raise ValueError(f"vi_reparameterisation must be one of exemplar, flipout, shared, got {mode!r}")
    device = torch.device(device)
    runtime = runtime_options(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = runtime.prepare_model(model.to(device)).train()
    backbone, head = split_named_parameters(model)
    q = MeanFieldGaussian(backbone, parameterisation="log_std", psi_init=PSI_INIT,
                          generator=torch.Generator().manual_seed(seed + 31)).to(device)
    num_data = len(train_set)
    sgd = torch.optim.SGD([dict(params=list(q.mu), weight_decay=0.0),
                           dict(params=list(head.values()), weight_decay=hp.head_weight_decay)],
                          lr=hp.lr, momentum=hp.momentum)
    adam = torch.optim.Adam(list(q.psi), lr=PSI_LR)
    gen = torch.Generator().manual_seed(seed)
    draw_gen = torch.Generator().manual_seed(seed + 7919)
    stream = BatchStream(train_set, hp.batch_size, gen, device, runtime)
    beta = float(hp.temperature)
    history, reason, step = [], "", -1
    try:
        for step in range(hp.steps):
            lr = hp.lr * cosine_lr(step, hp.steps, None)
            set_lr(sgd, lr)
            xb, yb = next(stream)
            with runtime.autocast_context(device):
                out = sampled_forward(model, q, runtime.prepare_input(xb), mode=mode, generator=draw_gen)
                nll = F.cross_entropy(out, yb)
            if not math.isfinite(float(nll.detach())):  # before the KL, which rejects non-finite sigmas
                raise Diverged(f"non-finite data loss at step {step}")
            kl = q.kl(prior)
            loss = negative_elbo(nll, kl, num_data, beta)
            if hp.vi_ood_weight:
                ood = _uniform_noise_like(xb, draw_gen)
                with runtime.autocast_context(device), _frozen_batchnorm_statistics(model):
                    logits = [sampled_forward(model, q, runtime.prepare_input(ood), mode=mode, generator=draw_gen)
                              for _ in range(OOD_SAMPLES)]
                ood_term = ood_margin(logits, hp.vi_ood_margin)
                loss = loss - hp.vi_ood_weight * ood_term
            sgd.zero_grad(set_to_none=True)
            adam.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip:  # the whole gradient's norm, as the other methods clip it
                torch.nn.utils.clip_grad_norm_(list(q.parameters()) + list(head.values()), hp.grad_clip)
            sgd.step()
            adam.step()
            if step % hp.log_every == 0 or step == hp.steps - 1:
                value, kl_v = float(loss.detach()), float(kl.detach())
                history.append({"step": step, "lr": lr, "loss": float(nll.detach()), "kl": kl_v,
                                "prior_term": beta * kl_v / num_data, "objective": value, "phase": "vi"})
                if hp.vi_ood_weight:
                    history[-1]["ood_mi"] = float(ood_term.detach())  # the clipped MI of the OOD batch
            if not math.isfinite(float(loss.detach())):
                raise Diverged(f"non-finite negative ELBO at step {step}")
        samples = EvalSetAverage(eval_sets, device, runtime)
        for s in range(prediction_samples(hp)):
            load_sample_into(model, q, generator=draw_gen)
            samples.add(model, hp.steps + s)
        outputs = samples.result(model)
        probs, expected_entropy = outputs["probs"], outputs["expected_entropy"]
        num_samples = samples.num_samples
    except Diverged as err:
        reason, probs, num_samples, expected_entropy = str(err), {}, 0, {}
    load_mean_into(model, q)
    posterior = None
    if keep_posterior and not reason:
        posterior = {"state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                     "sigma": {k: v.detach().cpu().clone() for k, v in q.sigma_dict().items()}}
    # the KL per datum is in the history (prior_term = T KL / N); prior_energy means -log p(theta) / N elsewhere
    return FitResult(probs, not reason, reason, num_samples, step + 1, time.perf_counter() - t0, history,
                     expected_entropy=expected_entropy, posterior=posterior)
