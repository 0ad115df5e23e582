"""Source-task objectives and pre-training: supervised cross-entropy, SimCLR (NT-Xent) and BYOL.

At paper scale the source checkpoints are ImageNet models (downloaded once, converted by name); on the
embedded default they are trained here on the source digits. The same :class:`SourceObjective` is used
again when the prior is learned (SWAG fine-tuning on the source loss, :mod:`bayes_transfer.priors.learning`).
BYOL (:class:`~bayes_transfer.objectives.byol.BYOLObjective`, BYOV's self-supervised source loss) is made by
:func:`make_objective` like the other two; its EMA target follows the online network after every step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.objectives.losses import ProjectionHead, nt_xent
from bayes_transfer.models.resnets import build_model
from bayes_transfer.inference.samplers import cosine_factor, set_lr
from bayes_transfer.inference.batches import BatchStream
from bayes_transfer.inference.state import load_matching_state, rng_states, save_state, set_rng_states

log = logging.getLogger("bayes_transfer.objectives.pretrain")

PRETRAININGS = ("supervised", "simclr", "byol")
#: the pre-trainings whose loss is a SourceObjective (BYOL has its own class)
SOURCE_OBJECTIVES = ("supervised", "simclr")


class SourceObjective(nn.Module):
    """The source loss of a pre-training: ``loss(model, x, y) -> scalar``.

    ``supervised``: cross-entropy of the model's own head ``fc`` on the source labels; with
    ``supervised_augment(x, generator)`` (the source task's usual augmentation; SWAG sets it, pre-training
    does not) on an augmented view of the batch drawn from the objective's seeded generator.
    ``simclr``: NT-Xent (temperature 0.1) between projections of two augmented views; the projection
    head is part of this objective (never of the prior). ``augment(x, generator)`` makes a view.
    """

    def __init__(self, kind: str, feature_dim: int = 0, augment: Callable | None = None,
                 temperature: float = 0.1, proj_layers: int = 2, proj_dim: int = 64, seed: int = 0,
                 supervised_augment: Callable | None = None):
        super().__init__()
        if kind not in SOURCE_OBJECTIVES:
            raise ValueError(f"SourceObjective kind must be one of {SOURCE_OBJECTIVES}, got {kind!r}"
                             + (" (byol: make_objective)" if kind == "byol" else ""))
        self.kind = kind
        self.temperature = temperature
        self.augment = augment
        self.supervised_augment = supervised_augment
        self.generator = torch.Generator().manual_seed(seed + 104729)
        if kind == "simclr":
            if augment is None:
                raise ValueError("simclr needs an augment(x, generator) function for its two views")
            self.projector = ProjectionHead(feature_dim, feature_dim, proj_dim, layers=proj_layers)

    def forward(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.kind == "supervised":
            if self.supervised_augment is not None:
                x = self.supervised_augment(x.detach().cpu(), self.generator).to(x.device, x.dtype)
            return F.cross_entropy(model(x), y)
        x_cpu = x.detach().cpu()
        v1 = self.augment(x_cpu, self.generator).to(x.device)
        v2 = self.augment(x_cpu, self.generator).to(x.device)
        z1 = self.projector(model.features(v1))
        z2 = self.projector(model.features(v2))
        return nt_xent(z1, z2, self.temperature)


def make_objective(kind: str, model: nn.Module, *, augment: Callable | None = None, seed: int = 0) -> nn.Module:
    """The source objective of pre-training ``kind`` for ``model`` (``loss = objective(model, x, y)``)."""
    if kind not in PRETRAININGS:
        raise ValueError(f"pre-training must be one of {PRETRAININGS}, got {kind!r}")
    if kind == "byol":
        from bayes_transfer.objectives.byol import BYOLObjective

        return BYOLObjective(model, augment, seed=seed)
    return SourceObjective(kind, model.feature_dim, augment=augment, seed=seed)


def objective_parameters(objective: nn.Module) -> list:
    """What the optimiser updates besides the model (BYOL: online heads; its target copies are EMA-only)."""
    if hasattr(objective, "trainable_parameters"):
        return list(objective.trainable_parameters())
    return list(objective.parameters())


def ema_step(objective: nn.Module, model: nn.Module, step: int, steps: int) -> None:
    """BYOL's target update after optimiser step ``step`` of ``steps`` (tau from its cosine schedule)."""
    if hasattr(objective, "update_target"):
        from bayes_transfer.objectives.byol import byol_momentum

        objective.update_target(model, byol_momentum(step, steps, objective.momentum))


@dataclass
class PretrainConfig:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    log_every: int = 100
    # supervised pre-training on the source task's augmentation (the ``augment`` passed to pretrain); SimCLR and
    # BYOL augment their views whatever this says
    augment: bool = False


def pretrain(arch: str, kind: str, train_set: Dataset, num_classes: int, cfg: PretrainConfig, *,
             augment: Callable | None = None, seed: int = 0, device="cpu", arch_kwargs: dict | None = None,
             runtime: RuntimeOptions | None = None, checkpoint_path: str | None = None,
             checkpoint_every: int = 0) -> tuple[nn.Module, SourceObjective, list[dict]]:
    """Train a model from scratch on the source task; returns (model, objective, history).

    For SimCLR and BYOL the model's ``fc`` is untouched (the head is trained downstream); the objective carries
    the trained projection head, which the prior-learning step continues to use. With ``checkpoint_path``
    and ``checkpoint_every > 0`` the whole state is saved there every ``checkpoint_every`` steps and a run
    finding the file continues from it (same numbers on the CPU); the caller deletes it when done.
    """
    device = torch.device(device)
    runtime = runtime_options(device) if runtime is None else runtime
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, **(arch_kwargs or {})).to(device)
    model = runtime.prepare_model(model).train()
    objective = make_objective(kind, model, augment=augment, seed=seed).to(device)
    if kind == "supervised" and cfg.augment:
        if augment is None:
            raise ValueError("pretrain.augment is true but the source task has no augmentation to apply")
        objective.supervised_augment = augment
    params = list(model.parameters()) + objective_parameters(objective)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    stream = BatchStream(train_set, cfg.batch_size, gen, device, runtime)
    history, t0, start = [], time.perf_counter(), 0
    resume = checkpoint_path is not None and checkpoint_every > 0
    key = {"arch": arch, "kind": kind, "cfg": vars(cfg), "seed": seed, "num_data": len(train_set)}
    saved = load_matching_state(checkpoint_path, key) if resume else None
    if saved is not None:
        restore_source_training(saved, model, objective, opt, stream, device)
        history, start = saved["history"], int(saved["step"])
        log.info("pretrain %s resumed at step %d/%d from %s", kind, start, cfg.steps, checkpoint_path)
    for step in range(start, cfg.steps):
        lr = cfg.lr * cosine_factor(step, cfg.steps)
        set_lr(opt, lr)
        xb, yb = next(stream)
        with runtime.autocast_context(device):
            loss = objective(model, runtime.prepare_input(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_step(objective, model, step, cfg.steps)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"pre-training ({kind}) diverged at step {step}: loss {value}")
            history.append({"step": step, "lr": lr, "loss": value, "time_s": time.perf_counter() - t0})
            log.info("pretrain %s step %d/%d loss %.4f lr %.3g", kind, step, cfg.steps, value, lr)
        if resume and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            save_state({"key": key, "step": step + 1, "history": history}
                       | source_training_state(model, objective, opt, stream, device), checkpoint_path)
    return model, objective, history


def source_training_state(model: nn.Module, objective: "SourceObjective", opt, stream, device) -> dict:
    """What a resumed source-task training loop (pre-training, SWAG) needs besides its own extras."""
    return {"model": model.state_dict(), "objective": objective.state_dict(),
            "objective_generator": objective.generator.get_state(), "optimizer": opt.state_dict(),
            "stream": stream.state_dict(), "rng": rng_states(device)}


def restore_source_training(saved: dict, model: nn.Module, objective: "SourceObjective", opt, stream,
                            device) -> None:
    """Load a :func:`source_training_state` back into the live objects."""
    model.load_state_dict(saved["model"])
    objective.load_state_dict(saved["objective"])
    objective.generator.set_state(saved["objective_generator"])
    opt.load_state_dict(saved["optimizer"])
    stream.load_state_dict(saved["stream"])
    set_rng_states(saved["rng"], device)
