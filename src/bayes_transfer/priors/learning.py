"""Learning the prior: SWAG over the feature extractor while fine-tuning on the source loss.

Schedule (Zhang et al. 2020, as in the paper): a cyclical cosine learning rate; snapshots of the
feature extractor's parameters (by name) are collected at the end of each cycle (``snapshots_per_cycle``
evenly spaced in the cycle's second half when > 1). Momentum 0.9 and weight decay on, as in the authors'
defaults (lr 0.02, 5e-5). The result is ``N(mean, 1/2 diag + 1/2 low-rank)``, see
:class:`~bayes_transfer.priors.swag.SWAGCollector`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from bayes_transfer import __version__
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.objectives.pretrain import SourceObjective, restore_source_training, source_training_state
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.swag import SWAGCollector
from bayes_transfer.inference.samplers import cosine_factor, set_lr
from bayes_transfer.inference.loop import BatchStream, load_matching_state, save_state

log = logging.getLogger("bayes_transfer.priors.learning")


@dataclass
class SWAGConfig:
    cycles: int = 20
    steps_per_cycle: int = 50
    snapshots_per_cycle: int = 1
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-5
    batch_size: int = 64
    max_rank: int = 20
    # floor of the SWAG diagonal variance: coordinates that never move on the source task would
    # otherwise get a near-zero variance, i.e. a prior so stiff that no downstream step size is stable
    variance_floor: float = 1e-8


def learn_prior(model: nn.Module, objective: SourceObjective, source_train: Dataset, cfg: SWAGConfig, *,
                seed: int = 0, device="cpu", metadata: dict | None = None, runtime: RuntimeOptions | None = None,
                checkpoint_path: str | None = None, checkpoint_every: int = 0) -> GaussianPrior:
    """Fine-tune ``model`` on ``objective`` with a cyclical cosine schedule and fit SWAG to its backbone.

    ``model`` is modified in place (it ends at the last snapshot). The returned prior covers exactly
    the feature extractor's parameters (names from :func:`~bayes_transfer.models.resnets.split_named_parameters`).
    With ``checkpoint_path`` and ``checkpoint_every > 0`` the whole state (SWAG moments included) is saved
    there every ``checkpoint_every`` steps, and a run finding the file continues from it (same prior on the
    CPU as an uninterrupted run); the caller deletes it when done.
    """
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    torch.manual_seed(seed)
    model = runtime.prepare_model(model.to(device)).train()
    objective.to(device).train()
    backbone, _ = split_named_parameters(model)
    params = list(model.parameters()) + list(objective.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    collector = SWAGCollector(backbone, max_rank=cfg.max_rank, variance_floor=cfg.variance_floor)
    stream = BatchStream(source_train, cfg.batch_size, torch.Generator().manual_seed(seed), device, runtime)
    n = cfg.steps_per_cycle
    snap_at = {n - 1 - round(j * (n / 2) / cfg.snapshots_per_cycle) for j in range(cfg.snapshots_per_cycle)}
    total, start = cfg.cycles * n, 0
    resume = checkpoint_path is not None and checkpoint_every > 0
    key = {"kind": objective.kind, "cfg": vars(cfg), "seed": seed, "num_data": len(source_train)}
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
            collector.collect(backbone)
        if t == n - 1:
            log.info("swag cycle %d/%d loss %.4f snapshots %d", cycle + 1, cfg.cycles, float(loss.detach()),
                     collector.n_snapshots)
        if resume and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            save_state({"key": key, "step": step + 1, "swag": collector.state_dict()}
                       | source_training_state(model, objective, opt, stream, device), checkpoint_path)
    meta = {
        "source_loss": objective.kind,
        "swag": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "library_version": __version__,
    }
    meta.update(metadata or {})
    return collector.prior(metadata=meta)
