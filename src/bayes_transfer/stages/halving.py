"""Successive halving over a tuning grid: the rungs' budgets and sizes, the promotion rule, and the driver.

``tuning.strategy: successive_halving`` (``tuning.successive_halving``: ``rungs`` R, ``eta``, ``min_steps``):
rung 0 fits every grid point for ``min_steps`` training steps (null: ``train.steps / eta^(R-1)``), each later rung
fits the best ``ceil(k / eta)`` points of the rung before (from scratch, with their own schedule) for ``eta``
times the steps, and the last rung fits its points for the whole ``train.steps``. The selection is made among the
last rung's points by :func:`bayes_transfer.stages.selection.select` (same score and tie-breaks as the grid).
``tuning.strategy: grid`` is one rung: every point at the whole budget.

Promotion ranks the successful points of a rung like the selection does (score, then the smaller grid values);
failed points are never promoted. Nothing here fits a model: :func:`run_halving` takes the fitting as a function.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from bayes_transfer.stages import selection

#: ``tuning.strategy``
STRATEGIES = ("grid", "successive_halving")


def rung_steps(max_steps: int, rungs: int, eta: int, min_steps: int | None = None) -> list[int]:
    """Training steps of each rung: ``min_steps * eta^r`` (null: ``max_steps / eta^(R-1)``, rounded), the last
    rung ``max_steps``; never below 1 nor above ``max_steps``."""
    if rungs < 1 or eta < 2:
        raise ValueError(f"tuning.successive_halving needs rungs >= 1 and eta >= 2, got rungs {rungs}, eta {eta}")
    if min_steps is None:
        steps = [max(1, round(max_steps / eta ** (rungs - 1 - r))) for r in range(rungs)]
    else:
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"tuning.successive_halving.min_steps must be in 1..train.steps ({max_steps}), "
                             f"got {min_steps}")
        steps = [min(max_steps, int(min_steps) * eta ** r) for r in range(rungs)]
    steps[-1] = int(max_steps)
    return steps


def rung_sizes(n_points: int, rungs: int, eta: int) -> list[int]:
    """Points fitted in each rung: all ``n_points``, then ``ceil(k / eta)`` of the previous ``k`` (at least 1)."""
    sizes = [int(n_points)]
    for _ in range(rungs - 1):
        sizes.append(max(1, math.ceil(sizes[-1] / eta)))
    return sizes


def min_fit_steps(method: str, train_cfg: Mapping) -> int:
    """The fewest training steps a fit of ``method`` can run: an SG-MCMC method's cyclical schedule needs room
    for ``samples_per_cycle`` sampling steps in each of its ``cycles`` (1 for the other methods)."""
    from bayes_transfer.inference.methods import METHODS
    from bayes_transfer.inference.samplers import CyclicalSchedule

    if not METHODS[method].bayesian:
        return 1
    cycles = int(train_cfg.get("cycles", 2))
    fraction = float(train_cfg.get("exploration_fraction", 0.5))
    samples = int(train_cfg.get("samples_per_cycle", 2))
    # a cycle of k steps samples in k - floor(fraction k) >= k (1 - fraction) of them: k = ceil(samples / (1 -
    # fraction)) + 1 always suffices, so the search is bounded
    for steps in range(cycles, cycles * (math.ceil(samples / (1.0 - fraction)) + 1) + 1):
        try:
            CyclicalSchedule(steps, cycles, fraction, samples)
            return steps
        except ValueError:
            continue
    raise ValueError(f"no number of steps fits {cycles} cycles of {samples} samples at exploration {fraction}")


def plan(n_points: int, max_steps: int, tuning_cfg: Mapping, floor: int = 1) -> list[tuple[int, int]]:
    """``[(steps, points), ...]`` per rung for ``tuning.strategy`` (grid: one rung of every point). No rung has
    fewer than ``floor`` steps (:func:`min_fit_steps`; at most ``max_steps``): a config with few training
    steps would otherwise give early rungs too short for an SG-MCMC schedule."""
    strategy = tuning_cfg.get("strategy", "grid")
    if strategy == "grid":
        return [(int(max_steps), int(n_points))]
    if strategy != "successive_halving":
        raise ValueError(f"tuning.strategy must be one of {STRATEGIES}, got {strategy!r}")
    sh = dict(tuning_cfg.get("successive_halving") or {})
    rungs, eta = int(sh.get("rungs", 3)), int(sh.get("eta", 3))
    steps = [max(s, min(int(floor), int(max_steps))) for s in rung_steps(int(max_steps), rungs, eta, sh.get("min_steps"))]
    return list(zip(steps, rung_sizes(n_points, rungs, eta)))


def promote(rows: Sequence[Mapping], k: int, score: str) -> list[int]:
    """Indices into ``rows`` of the best ``k`` successful rows, best first, ranked as
    :func:`~bayes_transfer.stages.selection.select` ranks (score, then the smaller grid values)."""
    ok = [i for i, r in enumerate(rows) if r.get("success") and math.isfinite(r["nll"]) and math.isfinite(r["error"])]
    ok.sort(key=lambda i: (selection.sort_key(rows[i], score), selection.values_key(rows[i]["values"])))
    return ok[:k]


def cost(rungs: Sequence[Mapping]) -> dict:
    """Fits and training steps spent over the rungs (each ``{"steps": s, "rows": [...]}``)."""
    return {"fits": sum(len(r["rows"]) for r in rungs), "steps": sum(r["steps"] * len(r["rows"]) for r in rungs)}


def run_halving(n_points: int, evaluate: Callable[[int, int, int], Mapping], score: str,
                schedule: Sequence[tuple[int, int]]) -> tuple[Mapping | None, list[dict]]:
    """Successive halving over points ``0 .. n_points - 1``.

    ``evaluate(point, steps, rung)`` fits one point and returns its row (``values``, ``nll``, ``error``,
    ``success``, ...); ``schedule`` is :func:`plan`'s. Returns the selected row of the last rung (None if every
    point of it failed) and the rungs, each ``{"rung", "steps", "points": [grid indices], "rows": [...]}``.
    """
    points = list(range(n_points))
    rungs: list[dict] = []
    for r, (steps, size) in enumerate(schedule):
        if r:
            prev = rungs[-1]
            points = [prev["points"][i] for i in promote(prev["rows"], size, score)]
            if not points:
                break
        rows = [dict(evaluate(p, steps, r)) for p in points]
        rungs.append({"rung": r, "steps": int(steps), "points": points, "rows": rows})
    best = selection.select(rungs[-1]["rows"], score) if rungs else None
    return best, rungs
