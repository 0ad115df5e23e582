"""The downstream training loop shared by every method: SGD (MAP) or an SG-MCMC chain with a BMA.

The objective is always the mean per-datum potential ``U(theta) / N``:

    mean cross-entropy over the batch
    - log p_backbone(theta_backbone) / N      (learned or isotropic-around-the-mean prior, if any;
                                              its gradient is added by BoundPrior.add_grad_)
    + weight_decay / 2 * |theta_backbone|^2     (zero-mean isotropic backbone prior, variance 1/(N wd))
    + head_weight_decay / 2 * |theta_head|^2    (the new head's zero-mean isotropic prior)

with N the number of training examples actually used. Weight-decay terms are applied by the optimizer
(they are the gradients of the isotropic zero-mean priors), the learned prior through a
:class:`~bayes_transfer.prior.BoundPrior`, so a step never concatenates the parameters.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from .bma import BayesianModelAverage
from .models import split_named_parameters
from .prior import GaussianPrior
from .samplers import SGHMC, SGLD, CyclicalSchedule, cosine_factor, set_lr

log = logging.getLogger("bayes_transfer.train")

INFERENCE = ("sgd", "sgld", "sghmc")


@dataclass
class Hyper:
    """Hyper-parameters of one downstream fit (the keys of a method's config)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0  # zero-mean isotropic prior on the backbone (sgd_transfer, ensembles)
    head_weight_decay: float = 1e-3  # zero-mean isotropic prior on the new head
    prior_scale: float = 1.0  # lambda, multiplies the learned prior's covariance
    prior_convention: str = "exact"  # "exact" (lambda * Sigma) or "priorbox" (the authors' code)
    prior_rank: int | None = None  # keep this many low-rank directions of the learned prior (None: all)
    prior_truncation: str = "svd"  # "svd" (top singular directions) or "first" (first stored rows)
    sampler: str = "sghmc"  # the SG-MCMC sampler of the BNN methods: "sghmc" or "sgld"
    ensemble_size: int = 0  # members of sgd_ensemble; 0: as many as the BMA has samples
    isotropic_variance: float = 1.0  # alpha of an isotropic backbone prior
    temperature: float = 1.0
    cycles: int = 2
    exploration_fraction: float = 0.5
    samples_per_cycle: int = 2
    log_every: int = 50

    @classmethod
    def from_dict(cls, values: Mapping) -> "Hyper":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    """What one fit produced: predictive probabilities per evaluation set and diagnostics."""

    probs: dict[str, Tensor]
    success: bool
    reason: str = ""
    num_samples: int = 0
    steps_run: int = 0
    wall_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)

    def diagnostics(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "success": self.success,
            "reason": self.reason,
            "num_samples": self.num_samples,
            "steps_run": self.steps_run,
            "wall_time_s": round(self.wall_time_s, 3),
            "final_loss": last.get("loss"),
            "final_prior_term": last.get("prior_term"),
        }


class Diverged(RuntimeError):
    """A numerical failure of a chain or an optimisation (recorded as data, not raised to the user)."""


def batches(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
            num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless stream of shuffled mini-batches (epochs without replacement), on ``device``.

    In-memory ``TensorDataset``s are indexed directly (fast for the embedded default); other datasets
    go through a ``DataLoader`` (workers and pinned memory for paper-scale data on a GPU).
    """
    n = len(dataset)
    bs = min(batch_size, n)
    if isinstance(dataset, TensorDataset):
        x, y = (t.to(device) for t in dataset.tensors[:2])
        while True:
            perm = torch.randperm(n, generator=generator)
            for i in range(0, n - bs + 1, bs):
                idx = perm[i:i + bs].to(device)
                yield x[idx], y[idx]
    loader = DataLoader(
        dataset, batch_size=bs, sampler=RandomSampler(dataset, generator=generator), drop_last=True,
        num_workers=num_workers, pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
    )
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


@torch.no_grad()
def predict_probs(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> Tensor:
    """Softmax predictive probabilities (float64, on CPU) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    if isinstance(dataset, TensorDataset):
        x = dataset.tensors[0]
        chunks = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    else:
        chunks = (xb for xb, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False))
    for xb in chunks:
        logits = model(xb.to(device))
        out.append(torch.softmax(logits.double(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, leave=False)
        except ImportError:  # pragma: no cover
            pass
    return None


def fit(
    model: nn.Module,
    train_set: Dataset,
    *,
    inference: str,
    hp: Hyper,
    eval_sets: Mapping[str, Dataset],
    backbone_prior: GaussianPrior | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "fit",
    on_step: Callable[[int, dict], None] | None = None,
    sample_dir: str | None = None,
) -> FitResult:
    """Train ``model`` (already initialised from the pre-trained checkpoint) on ``train_set``.

    ``inference="sgd"``: SGD with momentum and a cosine learning-rate decay; the final model's
    probabilities are returned. ``"sgld"``/``"sghmc"``: a cyclical SG-MCMC chain; at the schedule's
    sample steps the model's probabilities on every evaluation set are added to an online Bayesian
    model average. ``backbone_prior`` (if given) is bound to the feature extractor's parameters by name.
    A non-finite loss, prior or prediction ends the fit with ``success=False`` and a reason.
    ``sample_dir`` (optional) also writes each sample's state dict there as ``sample_XXX.pt``; the
    Bayesian model average itself never needs them.
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")
    device = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    model.to(device).train()
    num_data = len(train_set)
    backbone, head = split_named_parameters(model)
    bound = backbone_prior.bind(backbone).to(device) if backbone_prior is not None else None
    groups = [
        dict(params=list(backbone.values()), weight_decay=hp.weight_decay),
        dict(params=list(head.values()), weight_decay=hp.head_weight_decay),
    ]
    if inference == "sgd":
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        schedule = None
        sample_steps: set[int] = set()
    else:
        cls = SGLD if inference == "sgld" else SGHMC
        kwargs = dict(lr=hp.lr, num_data=num_data, temperature=hp.temperature)
        if inference == "sghmc":
            kwargs["momentum"] = hp.momentum
        opt = cls(groups, **kwargs)
        schedule = CyclicalSchedule(hp.steps, hp.cycles, hp.exploration_fraction, hp.samples_per_cycle)
        sample_steps = set(schedule.sample_steps())
    bma = BayesianModelAverage()
    history: list[dict] = []
    stream = batches(train_set, hp.batch_size, gen, device)
    bar = _progress(hp.steps, desc)
    reason = ""
    step = -1
    try:
        for step in range(hp.steps):
            lr = hp.lr * (schedule.lr_factor(step) if schedule else cosine_factor(step, hp.steps))
            set_lr(opt, lr)
            xb, yb = next(stream)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if bound is not None:  # gradient of -log p(theta) / N, added without an autograd graph
                bound.add_grad_(1.0 / num_data)
            if schedule is None:
                opt.step()
            else:
                opt.step(noise=not schedule.is_exploring(step), generator=noise_gen)
            if step % hp.log_every == 0 or step == hp.steps - 1 or step in sample_steps:
                record = _record(step, lr, loss, backbone, head, hp, bound, num_data, schedule)
                history.append(record)
                if not math.isfinite(record["loss"]) or not math.isfinite(record["objective"]):
                    raise Diverged(f"non-finite loss at step {step}")
                if on_step is not None:
                    on_step(step, record)
                log.info("%s step %d/%d loss %.4f lr %.3g prior %.4g", desc, step, hp.steps,
                         record["loss"], lr, record["prior_term"])
            if step in sample_steps:
                probs = {k: predict_probs(model, ds, device) for k, ds in eval_sets.items()}
                if not all(torch.all(torch.isfinite(p)) for p in probs.values()):
                    raise Diverged(f"non-finite predictions at sample step {step}")
                bma.add(probs)
                if sample_dir is not None:
                    Path(sample_dir).mkdir(parents=True, exist_ok=True)
                    torch.save(model.state_dict(), Path(sample_dir) / f"sample_{bma.num_samples - 1:03d}.pt")
            if bar is not None:
                bar.update(1)
    except Diverged as err:
        reason = str(err)
    except FloatingPointError as err:
        reason = f"{err} at step {step}"

    finally:
        if bar is not None:
            bar.close()
    success = not reason
    if success and inference == "sgd":
        probs = {k: predict_probs(model, ds, device) for k, ds in eval_sets.items()}
        if not all(torch.all(torch.isfinite(p)) for p in probs.values()):
            success, reason = False, "non-finite predictions of the final model"
        else:
            bma.add(probs)
    return FitResult(
        probs=bma.probs() if success else {},
        success=success,
        reason=reason,
        num_samples=bma.num_samples,
        steps_run=step + 1,
        wall_time_s=time.perf_counter() - t0,
        history=history,
    )


@torch.no_grad()
def _record(step, lr, loss, backbone, head, hp, bound, num_data, schedule) -> dict:
    """One line of the training log: data loss, the prior term (-log prior / N, with weight decays)."""
    prior_term = 0.0
    if bound is not None:
        prior_term -= float(bound.log_prob()) / num_data
    if hp.weight_decay:
        prior_term += 0.5 * hp.weight_decay * sum(float(p.square().sum()) for p in backbone.values())
    if hp.head_weight_decay:
        prior_term += 0.5 * hp.head_weight_decay * sum(float(p.square().sum()) for p in head.values())
    loss_v = float(loss)
    return {
        "step": step,
        "lr": lr,
        "loss": loss_v,
        "prior_term": prior_term,
        "objective": loss_v + prior_term,
        "phase": "sgd" if schedule is None else ("explore" if schedule.is_exploring(step) else "sample"),
    }
