"""BYOL (Grill et al. 2020) as a source objective: the self-supervised loss BYOV learns its prior on.

Online branch: the model's feature extractor (``model.features``), a projector and a predictor (both
:class:`~bayes_transfer.objectives.losses.ProjectionHead` MLPs, Linear-BN-ReLU-Linear). Target branch: a
copy of the feature extractor and of the projector, updated only as an exponential moving average (EMA) of
the online ones, ``target <- tau * target + (1 - tau) * online`` (:meth:`BYOLObjective.update_target`, called
after each optimiser step; under Bayes by Backprop the online values are the posterior means, BYOV's "EMA of
the student's MAP parameters"). The loss is the symmetrised normalised squared error between the online
prediction of one view and the target projection of the other (:func:`byol_loss`). The projector,
predictor and target copies belong to the objective, so a prior over the model's backbone never contains them.

It is called like :class:`~bayes_transfer.objectives.pretrain.SourceObjective`: ``loss = objective(model, x, y)``
(``y`` unused), with ``kind``, ``augment`` and ``generator`` attributes; :meth:`trainable_parameters` are what the
optimiser updates besides the model (the target copies have ``requires_grad=False`` and never get a gradient).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayes_transfer.objectives.losses import ProjectionHead

__all__ = ["byol_loss", "byol_momentum", "BYOLObjective"]


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``|p/|p| - z/|z||^2 = 2 - 2 cos(p, z)``; ``z`` is treated as a constant target."""
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"byol_loss: p and z must be 2-D of the same shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return (2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def byol_momentum(step: int, total: int, base: float = 0.996) -> float:
    """BYOL's EMA schedule: tau = 1 - (1 - base) (cos(pi step / total) + 1) / 2, from ``base`` to 1."""
    if total < 1:
        raise ValueError(f"byol_momentum: total must be >= 1, got {total}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


class BYOLObjective(nn.Module):
    """The BYOL loss of a model with a ``features`` method; the target branch is built from ``model``.

    ``hidden_dim``/``proj_dim``: the MLP widths (BYOL: 4096 / 256; the defaults suit the small models here).
    ``momentum``: the EMA coefficient tau used by :meth:`update_target` unless one is passed.
    """

    kind = "byol"

    def __init__(self, model: nn.Module, augment: Callable, *, hidden_dim: int = 128, proj_dim: int = 64,
                 momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        if augment is None:
            raise ValueError("byol needs an augment(x, generator) function for its two views")
        if not hasattr(model, "features") or not hasattr(model, "feature_dim"):
            raise TypeError(f"byol needs a model with features() and feature_dim, got {type(model).__name__}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"byol: the EMA momentum must be in [0, 1], got {momentum!r}")
        self.augment, self.momentum = augment, float(momentum)
        self.generator = torch.Generator().manual_seed(seed + 104729)
        self.projector = ProjectionHead(model.feature_dim, hidden_dim, proj_dim, layers=2)
        self.predictor = ProjectionHead(proj_dim, hidden_dim, proj_dim, layers=2)
        self.target_encoder = copy.deepcopy(model)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The online projector and predictor (the optimiser's share of the objective)."""
        return list(self.projector.parameters()) + list(self.predictor.parameters())

    def target_params(self) -> dict[str, Tensor]:
        """The target feature extractor's parameters by the model's names (BYOV's N(mu_teacher, I) prior mean)."""
        return dict(self.target_encoder.named_parameters())

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        x_cpu = x.detach().cpu()
        v1 = self.augment(x_cpu, self.generator).to(x.device)
        v2 = self.augment(x_cpu, self.generator).to(x.device)
        p1 = self.predictor(self.projector(model.features(v1)))
        p2 = self.predictor(self.projector(model.features(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder.features(v1))
            z2 = self.target_projector(self.target_encoder.features(v2))
        return byol_loss(p1, z2) + byol_loss(p2, z1)

    @torch.no_grad()
    def update_target(self, online: nn.Module | Mapping[str, Tensor], momentum: float | None = None) -> None:
        """EMA step of the target branch towards ``online`` (the model, or its parameters by name) and the
        online projector. Names of ``online`` that the target encoder lacks are an error; target parameters
        that ``online`` does not give (e.g. the unused classifier ``fc``) are left as they are."""
        tau = self.momentum if momentum is None else float(momentum)
        source = dict(online.named_parameters()) if isinstance(online, nn.Module) else dict(online)
        target = dict(self.target_encoder.named_parameters())
        unknown = [n for n in source if n not in target]
        if unknown:
            raise KeyError(f"update_target: the target encoder has no parameter {unknown[0]!r}")
        pairs = [(target[n], v) for n, v in source.items()]
        pairs += list(zip(self.target_projector.parameters(), self.projector.parameters()))
        for t, o in pairs:
            t.mul_(tau).add_(o.detach().to(t.dtype), alpha=1.0 - tau)
