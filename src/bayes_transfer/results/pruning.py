"""Pruning a Gaussian posterior N(mu, sigma^2) by signal-to-noise ratio |mu| / sigma, against magnitude |mu|.

BYOV (Turishcheva et al. 2023, Sec. 4.4, after Blundell et al. 2015) sets to zero the weights of lowest SNR
(``criterion="snr"``) and compares with magnitude pruning (lowest |mu|, ``criterion="magnitude"``), without
retraining; it keeps a percentile per layer (``scope="layer"``: each parameter tensor loses the same fraction);
``scope="global"`` ranks all weights together. The pruned parameters are the means with the pruned entries
set to 0.

Exactness: of n weights (per tensor, or in all), exactly k = floor(f n + 1/2) are pruned, the k of lowest score,
ties broken by position (a stable sort), so the pruned fraction is k / n, within 1 / (2 n) of f.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["CRITERIA", "SCOPES", "pruning_scores", "prune_masks", "prune", "prior_mean_and_std", "pruning_curve",
           "fit_pruning_summary"]

CRITERIA = ("snr", "magnitude")
SCOPES = ("layer", "global")


def pruning_scores(mu: Tensor, sigma: Tensor | None, criterion: str = "snr") -> Tensor:
    """|mu| / sigma (``"snr"``) or |mu| (``"magnitude"``); low scores are pruned first."""
    if criterion not in CRITERIA:
        raise ValueError(f"pruning criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "magnitude":
        return mu.detach().abs()
    if sigma is None:
        raise ValueError("SNR pruning needs the posterior standard deviations sigma")
    if sigma.shape != mu.shape:
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}, mu has {tuple(mu.shape)}")
    if not torch.all(sigma > 0):
        raise ValueError("SNR pruning needs sigma > 0 everywhere")
    return mu.detach().abs() / sigma.detach()


def _num_pruned(fraction: float, n: int) -> int:
    return int(math.floor(fraction * n + 0.5))


def _lowest(scores: Tensor, k: int) -> Tensor:
    """Boolean mask (True = pruned) of the k lowest entries of a flat tensor, ties by position."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        order = torch.sort(scores.reshape(-1), stable=True).indices
        mask[order[:k]] = True
    return mask


def prune_masks(scores: Mapping[str, Tensor], fraction: float, scope: str = "layer") -> dict[str, Tensor]:
    """Boolean masks (True = pruned) removing exactly the given fraction of lowest-score entries."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"the pruned fraction must be in [0, 1], got {fraction!r}")
    if scope not in SCOPES:
        raise ValueError(f"pruning scope must be one of {SCOPES}, got {scope!r}")
    if scope == "layer":
        return {n: _lowest(s, _num_pruned(fraction, s.numel())).reshape(s.shape) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1).float() for s in scores.values()])
    mask = _lowest(flat, _num_pruned(fraction, flat.numel()))
    pieces = torch.split(mask, [s.numel() for s in scores.values()])
    return {n: m.reshape(s.shape) for (n, s), m in zip(scores.items(), pieces)}


def prune(mu: Mapping[str, Tensor], sigma: Mapping[str, Tensor] | None, fraction: float, *,
          criterion: str = "snr", scope: str = "layer") -> dict[str, Tensor]:
    """The means with the ``fraction`` of lowest-score entries set to 0 (new tensors; inputs untouched)."""
    return _prune(mu, sigma, fraction, criterion, scope)[0]


def _prune(mu, sigma, fraction, criterion, scope) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    if sigma is not None and list(sigma) != list(mu):
        raise ValueError("mu and sigma must have the same parameter names, in the same order")
    scores = {n: pruning_scores(m, None if sigma is None else sigma[n], criterion) for n, m in mu.items()}
    masks = prune_masks(scores, fraction, scope)
    return {n: m.detach().masked_fill(masks[n], 0.0) for n, m in mu.items()}, masks


def prior_mean_and_std(prior: GaussianPrior) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Named means and marginal standard deviations sqrt(v + sum_k F_k^2) of a Gaussian posterior/prior."""
    var = prior.variance.double() + prior.factor.double().square().sum(0)
    return prior.unflatten(prior.mean), prior.unflatten(var.sqrt().to(prior.mean.dtype))


def pruning_curve(mu: Mapping[str, Tensor], sigma: Mapping[str, Tensor], fractions: Iterable[float],
                  evaluate: Callable[[dict[str, Tensor]], float], *, criteria: Iterable[str] = CRITERIA,
                  scope: str = "layer") -> list[dict]:
    """``evaluate(pruned_params)`` (e.g. test accuracy) for each criterion and pruned fraction.

    Rows: ``criterion``, ``scope``, ``fraction`` (requested), ``pruned_fraction`` (achieved, k / n over all
    weights), ``value`` (what ``evaluate`` returned). ``evaluate`` gets the pruned means by name (load them into
    a copy of the model, e.g. with ``load_state_dict(..., strict=False)``, and score it).
    """
    total = sum(m.numel() for m in mu.values())
    rows = []
    for criterion in criteria:
        for f in fractions:
            pruned, masks = _prune(mu, sigma, f, criterion, scope)
            count = sum(int(m.sum()) for m in masks.values())
            rows.append({"criterion": criterion, "scope": scope, "fraction": float(f),
                         "pruned_fraction": count / total, "value": float(evaluate(pruned))})
    return rows


def fit_pruning_summary(records: Iterable[Mapping]):
    """The pruning curves of the variational fits' run records (their ``pruning`` rows), per pre-training, method,
    training size, criterion and fraction: ``mean`` and ``se`` (standard error over seeds) of the accuracy,
    ``pruned_fraction``, ``n_seeds``, and ``n_failed`` (runs of the cell without a curve: failed fits, whose
    numbers are never averaged in). A DataFrame; empty (with these columns) when no record has a curve."""
    import pandas as pd

    keys = ["pretraining", "method", "n_train"]
    rows, failed = [], {}
    for r in records:
        cell = tuple(r[k] for k in keys)
        failed.setdefault(cell, 0)
        if not r.get("success") or not r.get("pruning"):
            failed[cell] += 1
            continue
        rows += [dict(zip(keys, cell), seed=r["seed"], **row) for row in r["pruning"]]
    columns = keys + ["criterion", "fraction", "pruned_fraction", "mean", "se", "n_seeds", "n_failed"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    group = keys + ["criterion", "fraction"]
    out = table.groupby(group, sort=False).agg(pruned_fraction=("pruned_fraction", "mean"), mean=("value", "mean"),
                                               sd=("value", "std"), n_seeds=("value", "count")).reset_index()
    out["se"] = (out["sd"] / out["n_seeds"].pow(0.5)).fillna(0.0)
    out["n_failed"] = [failed[tuple(r[k] for k in keys)] for _, r in out.iterrows()]
    return out[columns]
