"""Loss along directions in parameter space (the paper's Fig. 3a).

The question behind the figure: are the directions in which the learned prior has most variance the
directions in which the *downstream* loss is flat? The recipe:

1. fix the pre-trained feature extractor theta and train a linear head on its features (downstream data);
2. take the top singular directions of the prior's low-rank factor, and random Gaussian directions;
3. filter-normalise every direction (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"):
   each filter of the direction (a slice along the output-channel dimension of a weight with >= 2 dims)
   is rescaled to the norm of the same filter of theta, so that distances are comparable across
   directions and across layers whatever their scale; 1-d parameters (BatchNorm weight and bias,
   biases) get a zero direction, Li et al.'s default;
4. evaluate the test loss of theta + t * d (head fixed, BatchNorm in eval mode) for t on a grid.

A flat curve means the loss does not care about moving along that direction.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayes_transfer.priors.gaussian import GaussianPrior

Direction = dict[str, Tensor]


def filter_normalise(direction: Mapping[str, Tensor], params: Mapping[str, Tensor], eps: float = 1e-10,
                     ignore_1d: bool = True) -> Direction:
    """Li et al.'s filter normalisation of ``direction`` with respect to ``params`` (both keyed by name).

    For a parameter with >= 2 dimensions, each filter ``d[i]`` (index ``i`` along dim 0) becomes
    ``d[i] * ||theta[i]|| / (||d[i]|| + eps)``. One-dimensional parameters get a zero direction when
    ``ignore_1d`` (else they are normalised as a single filter).
    """
    missing = [n for n in direction if n not in params]
    if missing:
        raise KeyError(f"filter_normalise: direction has parameters the model lacks: {missing[:3]}")
    out: Direction = {}
    for name, d in direction.items():
        p = params[name].detach()
        if d.shape != p.shape:
            raise ValueError(f"filter_normalise: {name} has shape {tuple(d.shape)}, parameter {tuple(p.shape)}")
        d = d.detach().to(p.dtype)
        if p.dim() <= 1:
            if ignore_1d:
                out[name] = torch.zeros_like(p)
            else:
                out[name] = d * (p.norm() / (d.norm() + eps))
            continue
        d_rows = d.reshape(d.shape[0], -1)
        p_rows = p.reshape(p.shape[0], -1)
        scale = p_rows.norm(dim=1) / (d_rows.norm(dim=1) + eps)
        out[name] = (d_rows * scale[:, None]).reshape(p.shape)
    return out


def prior_directions(prior: GaussianPrior, count: int) -> list[Direction]:
    """The top-``count`` right singular vectors of the prior's low-rank factor, by parameter name.

    These are the principal axes of the low-rank part of the learned covariance, largest variance first.
    """
    if count > prior.rank:
        raise ValueError(f"prior_directions: {count} directions asked, the prior has rank {prior.rank}")
    if count <= 0:
        return []
    _, _, vh = torch.linalg.svd(prior.factor.double(), full_matrices=False)
    return [{k: v.to(prior.mean.dtype) for k, v in prior.unflatten(vh[i]).items()} for i in range(count)]


def random_directions(params: Mapping[str, Tensor], count: int, generator: torch.Generator) -> list[Direction]:
    """``count`` standard-normal directions with the shapes of ``params``."""
    return [{n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}
            for _ in range(count)]


def train_linear_head(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-3,
                      max_iter: int = 200) -> nn.Linear:
    """A multinomial logistic regression on fixed features (full-batch L-BFGS, deterministic).

    The weights start at zero, so the result depends only on the data and ``weight_decay``.
    """
    features = features.detach().double()
    head = nn.Linear(features.shape[1], num_classes).double()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.float()


@torch.no_grad()
def loss_along(model: nn.Module, head: nn.Module, direction: Mapping[str, Tensor], distances: Iterable[float],
               x: Tensor, y: Tensor, batch_size: int = 1024) -> list[float]:
    """Mean cross-entropy of ``head(model.features(x))`` at theta + t * direction for every t.

    ``model``'s parameters are restored afterwards; it is evaluated in eval mode (BatchNorm uses its
    running statistics, which are buffers and never perturbed).
    """
    params = dict(model.named_parameters())
    original = {n: params[n].detach().clone() for n in direction}
    was_training = model.training
    model.eval()
    out = []
    try:
        for t in distances:
            for n, d in direction.items():
                params[n].copy_(original[n] + float(t) * d.to(original[n].device))
            total = 0.0
            for i in range(0, len(x), batch_size):
                logits = head(model.features(x[i:i + batch_size]))
                total += float(F.cross_entropy(logits.double(), y[i:i + batch_size], reduction="sum"))
            out.append(total / len(x))
    finally:
        for n, v in original.items():
            params[n].copy_(v)
        model.train(was_training)
    return out


def landscape_summary(table):
    """Mean ± SE over seeds, per direction type and distance, of the per-seed mean loss over directions."""
    import numpy as np

    per_seed = table.groupby(["pretraining", "direction_type", "distance", "seed"])["loss"].mean().reset_index()
    out = per_seed.groupby(["pretraining", "direction_type", "distance"])["loss"].agg(
        mean="mean", sd="std", n_seeds="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n_seeds"])
    return out
