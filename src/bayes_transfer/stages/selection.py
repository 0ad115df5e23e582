"""Choosing a grid point from its validation scores, and the flags a selection carries.

Used by :func:`bayes_transfer.stages.experiment.tune_stage`:

- :func:`expand_grid` lists the grid points (every combination), each as the values the grid lists and the
  hyper-parameters a fit gets (the paper's convention "weight decay values are divided by the learning rate":
  with ``weight_decay_over_lr`` a listed weight decay w is fitted as w / lr);
- :func:`select` picks the best successful point by ``tuning.score``: ``nll`` (the validation negative
  log-likelihood) or ``error_then_nll`` (the error of the selection metric, ties broken by the NLL); never by
  grid order. A point whose validation accuracy is at chance (row ``at_chance``, :func:`at_chance`) ranks after
  every point above chance: the NLL rates a collapsed network that predicts the uniform distribution (NLL
  log C) above networks that classify well but are confidently wrong on a few images, as at n = 10, and such a
  selection makes a baseline a straw man (the digits' SimCLR ``bnn_isotropic_prior`` at n = 10 chose alpha 0.01
  this way, 19 % test accuracy). Only when every point is at chance is one selected (and flagged ``chance``);
- :func:`grid_edges` says which selected values lie on an edge of their grid (a wider grid might do better),
  :func:`at_chance` whether a validation accuracy is within 2 standard errors of guessing.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

#: ``tuning.score``
SCORES = ("nll", "error_then_nll")
#: a validation set smaller than this makes the selection noise (flagged as ``small_validation``)
MIN_VALIDATION = 50


def expand_grid(grid: Mapping[str, Sequence], weight_decay_over_lr: bool = False,
                lr: float | None = None) -> list[tuple[dict, dict]]:
    """(listed values, fitted values) of every grid point, keys sorted.

    ``weight_decay_over_lr``: a listed ``weight_decay`` w is fitted as w / lr, with the point's own ``lr`` if the
    grid has one, else ``lr`` (the ``train`` section's).
    """
    keys = sorted(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    out = []
    for point in points:
        fitted = dict(point)
        if weight_decay_over_lr and "weight_decay" in point:
            rate = float(point.get("lr", lr if lr is not None else math.nan))
            if not rate > 0:
                raise ValueError("tuning.weight_decay_over_lr needs a positive lr (in the grid or train.lr)")
            fitted["weight_decay"] = float(point["weight_decay"]) / rate
        out.append((point, fitted))
    return out


def sort_key(row: Mapping, score: str) -> tuple[float, ...]:
    """Smaller is better: (at chance, nll) or (at chance, error, nll); ``at_chance`` (0 when the row has none)
    puts a point at chance level after every point above it."""
    chance = float(bool(row.get("at_chance", False)))
    if score == "nll":
        return (chance, row["nll"])
    if score == "error_then_nll":
        return (chance, row["error"], row["nll"])
    raise ValueError(f"tuning.score must be one of {SCORES}, got {score!r}")


def select(rows: Sequence[Mapping], score: str) -> Mapping | None:
    """The best successful row (``success`` true, finite ``nll`` and ``error``) by ``score``, points at chance
    level last (:func:`sort_key`); None if none is.

    Rows that tie on every part of the score (identical predictions, in practice) go to the smaller grid values,
    compared key by key in sorted key order, so the choice never depends on the order the grid lists them in.
    """
    ok = [r for r in rows if r.get("success") and math.isfinite(r["nll"]) and math.isfinite(r["error"])]
    if not ok:
        return None
    return min(ok, key=lambda r: (sort_key(r, score), values_key(r["values"])))


def values_key(values: Mapping) -> tuple:
    """The tie-break of equal scores: the grid values, key by key in sorted key order (smaller first)."""
    return tuple((k, float(v) if isinstance(v, (int, float)) else str(v)) for k, v in sorted(values.items()))


def grid_edges(grid: Mapping[str, Sequence], selected: Mapping) -> dict[str, str]:
    """``{key: "low" | "high"}`` for each selected value at the smallest / largest of at least two numeric grid
    values. A selection of 0 (e.g. no weight decay) is not a low edge: nothing lies below it."""
    edges = {}
    for key, values in grid.items():
        nums = sorted({float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if len(nums) < 2 or key not in selected:
            continue
        value = float(selected[key])
        if value == nums[0] and value != 0.0:
            edges[key] = "low"
        elif value == nums[-1]:
            edges[key] = "high"
    return edges


def chance_accuracy(num_classes: int, n_val: int) -> float:
    """The accuracy below which a classifier is indistinguishable from guessing: 1/C + 2 standard errors of a
    guesser's accuracy on ``n_val`` examples."""
    p = 1.0 / num_classes
    return p + 2.0 * math.sqrt(p * (1.0 - p) / max(n_val, 1))


def at_chance(accuracy: float, num_classes: int, n_val: int) -> bool:
    return not accuracy > chance_accuracy(num_classes, n_val)
