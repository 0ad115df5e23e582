"""Learning the prior: SWAG over the feature extractor while fine-tuning on the source loss.

Schedule (Zhang et al. 2020, as in the paper): a cyclical cosine learning rate; snapshots of the
feature extractor's parameters (by name) are collected at the end of each cycle (``snapshots_per_cycle``
evenly spaced in the cycle's second half when > 1), except in the first ``burn_in_cycles`` cycles, whose
snapshots are discarded (the walk away from the converged checkpoint into the stationary regime of the SWAG
learning rate). The result is ``N(mean, 1/2 diag + 1/2 low-rank)``, see
:class:`~bayes_transfer.priors.swag.SWAGCollector`.

SWAG is meant to sample the source task's posterior around the checkpoint, so by default it keeps the
source training's regularisation: the pre-training's weight decay (``weight_decay=None``; the authors' code
used 5e-5, ten times less than the digits' pre-training, which makes the snapshots drift towards a less
regularised optimum) and the source task's usual augmentation for the supervised objective too (``augment``;
SimCLR augments its views anyway). Every prior carries a stationarity diagnostic in its metadata
(``diagnostics``, :mod:`bayes_transfer.priors.diagnostics`): the trend share over all snapshots, the cosine of
the top deviation direction with mean - checkpoint, the share of coordinates at the variance floor.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from bayes_transfer import __version__
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.objectives.pretrain import (PretrainConfig, SourceObjective, restore_source_training,
                                                 source_training_state)
from bayes_transfer.priors.diagnostics import prior_diagnostics
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.swag import SWAGCollector
from bayes_transfer.inference.samplers import cosine_factor, set_lr
from bayes_transfer.inference.batches import BatchStream
from bayes_transfer.inference.state import load_matching_state, save_state

log = logging.getLogger("bayes_transfer.priors.learning")


@dataclass
class SWAGConfig:
    cycles: int = 20
    steps_per_cycle: int = 50
    snapshots_per_cycle: int = 1
    lr: float = 0.02
    momentum: float = 0.9
    # None: the pre-training's weight decay (the workflow fills in pretrain.weight_decay; a direct call
    # without it uses PretrainConfig's default), see resolved_weight_decay
    weight_decay: float | None = None
    batch_size: int = 64
    max_rank: int = 20
    # floor of the SWAG diagonal variance: coordinates that never move on the source task would
    # otherwise get a near-zero variance, i.e. a prior so stiff that no downstream step size is stable
    variance_floor: float = 1e-8
    # cycles at the start whose snapshots are discarded (the transient away from the checkpoint)
    burn_in_cycles: int = 1
    # the source task's usual augmentation for the supervised objective too (SimCLR always augments)
    augment: bool = True

    def resolved_weight_decay(self) -> float:
        """The SGD weight decay used: ``weight_decay``, or the pre-training's (PretrainConfig's) when None."""
        return float(PretrainConfig.weight_decay if self.weight_decay is None else self.weight_decay)

    def check(self) -> None:
        """Raise a ValueError naming the key when the schedule leaves fewer than 2 snapshots."""
        if self.burn_in_cycles < 0:
            raise ValueError(f"swag.burn_in_cycles must be >= 0, got {self.burn_in_cycles}")
        kept = (self.cycles - self.burn_in_cycles) * self.snapshots_per_cycle
        if kept < 2:
            raise ValueError(f"swag.burn_in_cycles ({self.burn_in_cycles}) leaves {kept} snapshot(s) of "
                             f"swag.cycles ({self.cycles}) x snapshots_per_cycle ({self.snapshots_per_cycle}); "
                             "SWAG needs at least 2")


def learn_prior(model: nn.Module, objective: SourceObjective, source_train: Dataset, cfg: SWAGConfig, *,
                seed: int = 0, device="cpu", metadata: dict | None = None, runtime: RuntimeOptions | None = None,
                checkpoint_path: str | None = None, checkpoint_every: int = 0,
                source_augment: Callable | None = None) -> GaussianPrior:
    """Fine-tune ``model`` on ``objective`` with a cyclical cosine schedule and fit SWAG to its backbone.

    ``model`` is modified in place (it ends at the last snapshot). The returned prior covers exactly
    the feature extractor's parameters (names from :func:`~bayes_transfer.models.resnets.split_named_parameters`);
    its metadata holds the SWAG settings (``swag``, the weight decay resolved) and the stationarity
    diagnostic (``diagnostics``) of the snapshots against the starting ``model``.
    ``source_augment(x, generator)``: the source task's usual augmentation of a training batch; with
    ``cfg.augment`` a supervised ``objective`` trains on augmented batches (drawn from its own seeded
    generator). None: no augmentation here (e.g. a dataset whose transform already augments).
    With ``checkpoint_path`` and ``checkpoint_every > 0`` the whole state (SWAG moments included) is saved
    there every ``checkpoint_every`` steps, and a run finding the file continues from it (same prior on the
    CPU as an uninterrupted run); the caller deletes it when done.
    """
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    torch.manual_seed(seed)
    model = runtime.prepare_model(model.to(device)).train()
    objective.to(device).train()
    cfg.check()
    if objective.kind == "supervised":
        objective.supervised_augment = source_augment if cfg.augment else None
    backbone, _ = split_named_parameters(model)
    params = list(model.parameters()) + list(objective.parameters())
    weight_decay = cfg.resolved_weight_decay()
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=weight_decay)
    collector = SWAGCollector(backbone, max_rank=cfg.max_rank, variance_floor=cfg.variance_floor)
    start_point = collector.flat(backbone).float()  # the checkpoint, for the diagnostic (before any resume)
    stream = BatchStream(source_train, cfg.batch_size, torch.Generator().manual_seed(seed), device, runtime)
    n = cfg.steps_per_cycle
    snap_at = {n - 1 - round(j * (n / 2) / cfg.snapshots_per_cycle) for j in range(cfg.snapshots_per_cycle)}
    total, start = cfg.cycles * n, 0
    resume = checkpoint_path is not None and checkpoint_every > 0
    key = {"kind": objective.kind, "cfg": vars(cfg), "seed": seed, "num_data": len(source_train),
           "augmented": objective.kind == "supervised" and objective.supervised_augment is not None}
    saved = load_matching_state(checkpoint_path, key) if resume else None
    if saved is not None:
        restore_source_training(saved, model, objective, opt, stream, device)
        collector.load_state_dict(saved["swag"])
        start = int(saved["step"])
        log.info("swag resumed at step %d/%d from %s", start, total, checkpoint_path)
    for step in range(start, total):
        cycle, t = divmod(step, n)
        set_lr(opt, cfg.lr * cosine_factor(t, n))
        xb, yb = next(stream)
        with runtime.autocast_context(device):
            loss = objective(model, runtime.prepare_input(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if t in snap_at:
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"SWAG fine-tuning diverged in cycle {cycle} (loss {float(loss)})")
            if cycle >= cfg.burn_in_cycles:
                collector.collect(backbone, t=step)
        if t == n - 1:
            log.info("swag cycle %d/%d loss %.4f snapshots %d", cycle + 1, cfg.cycles, float(loss.detach()),
                     collector.n_snapshots)
        if resume and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            save_state({"key": key, "step": step + 1, "swag": collector.state_dict()}
                       | source_training_state(model, objective, opt, stream, device), checkpoint_path)
    meta = {
        "source_loss": objective.kind,
        "swag": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__} | {"weight_decay": weight_decay},
        "source_augmented": objective.kind == "simclr" or objective.supervised_augment is not None,
        "library_version": __version__,
    }
    meta.update(metadata or {})
    prior = collector.prior(metadata=meta)
    prior.metadata["diagnostics"] = prior_diagnostics(prior, start_point, trend=collector.trend,
                                                      m2=collector.m2).to_metadata()
    return prior
