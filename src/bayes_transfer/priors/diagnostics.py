"""Is a SWAG prior a posterior's spread, or drift? Stationarity diagnostics of the SWAG snapshots.

A SWAG stage that starts at a converged checkpoint and keeps training at a large learning rate collects
snapshots that move steadily along one direction (METHOD_NOTES §5b): the fitted "covariance" then measures
how far training walked, not the spread of a stationary posterior. Three statistics tell the two apart:

* **trend share**: the share of the snapshots' variance explained by a linear trend in time, coordinate by
  coordinate, ``sum_j SS_trend_j / sum_j SS_total_j`` with ``SS_trend_j = S_tj^2 / S_tt`` (``S`` the centred
  (co)moments of time t and coordinate j). A stationary (exchangeable) sequence of n snapshots explains
  ``1 / (n - 1)`` of its variance by a line on average; a steady drift plus small noise explains nearly 1.
  Two sources: :class:`TrendMoments`, streaming moments of (t, theta) over *all* snapshots that a
  :class:`~bayes_transfer.priors.swag.SWAGCollector` can accumulate (one extra float64 d-vector), or
  :func:`trend_share_of` on any time-ordered (n, d) sequence, e.g. the kept deviations (the rows of a SWAG
  prior's factor, oldest first): a deviation from the running mean is uncorrelated with the other kept ones
  for a stationary sequence and grows linearly with time for a drift, so the same statistic applies.
* **top-direction cosine**: the cosine of the deviations' top right singular vector with
  ``SWAG mean - starting checkpoint``, the singular vector oriented forward in time (the deviations'
  projections on it increase along the sequence). A drift away from the checkpoint gives ~ +1; the top
  direction of isotropic noise in d dimensions is nearly orthogonal to any fixed vector (|cos| ~ 1/sqrt(d)).
* **floor share**: the share of coordinates whose diagonal variance sits at the variance floor (they did
  not move on the source task; the floor, not the data, sets their prior).

Verdict (:func:`drift_threshold`): ``drift_dominated`` when the trend share exceeds both
:data:`DRIFT_SHARE` = 1/4 and four times its stationary expectation, ``4 / (n - 1)`` (so n <= 5 snapshots,
which always lie close to a line, are never flagged). For a stationary Gaussian sequence whose variance all
lies along one direction (the worst case) the share is ``Beta(1/2, (n - 2)/2)``-distributed and exceeds the
threshold with probability at most 4.1 % (n = 17; n = 10: 3.5 %, n = 20: 2.5 %, n = 40: 0.1 %); with many
independent directions it concentrates at ``1 / (n - 1)`` and practically never does. On the embedded
default's priors (n = 20) learned with the authors' weight decay 5e-5, no augmentation and no burn-in the
supervised one had share 0.97 (kept deviations), the SimCLR one 0.39; with the pre-training's weight decay,
augmentation and one burn-in cycle 0.65 and 0.59 (all snapshots; 0.42 and 0.40 on the kept deviations):
all flagged.

Wiring: :class:`~bayes_transfer.priors.swag.SWAGCollector` keeps a :class:`TrendMoments` (``collector.trend``,
observed in ``collect`` before the mean update, with the training step as time, saved with the collector's
state); :func:`~bayes_transfer.priors.learning.learn_prior` stores :func:`prior_diagnostics` with
``trend=collector.trend, m2=collector.m2`` in every prior's metadata (``diagnostics``), and
:func:`diagnostics_table` gathers them into the report's table (rule prior_diagnostics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import Tensor

from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["DRIFT_SHARE", "TrendMoments", "trend_share_of", "top_direction", "top_direction_cosine",
           "floor_share", "drift_threshold", "SWAGDiagnostics", "diagnose", "prior_diagnostics",
           "diagnostics_table"]

#: a linear trend explaining more than this share of the snapshots' variance (and more than 4 / (n - 1),
#: four times a stationary sequence's expectation) means drift; see the module docstring
DRIFT_SHARE = 0.25
_CHUNK = 1 << 20  # coordinates per float64 chunk when reducing over a large d


def drift_threshold(n: int) -> float:
    """The trend share above which a sequence of ``n`` snapshots is called drift-dominated."""
    return max(DRIFT_SHARE, 4.0 / (n - 1)) if n > 1 else math.inf


class TrendMoments:
    """Streaming centred moments of time and parameters: n, mean(t), S_tt and S_tj for every coordinate j.

    Welford's co-moment update, one float64 d-vector; pair it with the collector's own ``m2`` (S_jj).
    """

    def __init__(self, dim: int):
        self.n = 0
        self.t_mean = 0.0
        self.s_tt = 0.0
        self.s_t = torch.zeros(int(dim), dtype=torch.float64)

    @torch.no_grad()
    def observe(self, delta: Tensor, t: float) -> None:
        """Add a snapshot taken at time ``t``; ``delta`` = snapshot - mean of the *previous* snapshots
        (any value for the first one)."""
        n = self.n
        if n == 0:
            self.t_mean, self.n = float(t), 1
            return
        dt = float(t) - self.t_mean
        w = n / (n + 1.0)
        self.s_t.add_(delta.reshape(-1).to(torch.float64), alpha=w * dt)
        self.s_tt += w * dt * dt
        self.t_mean += dt / (n + 1.0)
        self.n = n + 1

    def share(self, m2: Tensor) -> float:
        """Trend share given S_jj = ``m2`` (the collector's sum of squared deviations from the mean)."""
        total = float(m2.double().sum())
        if self.n < 2 or self.s_tt <= 0 or total <= 0:
            return float("nan")
        return float(self.s_t.square().sum()) / self.s_tt / total

    def state_dict(self) -> dict:
        return {"n": self.n, "t_mean": self.t_mean, "s_tt": self.s_tt, "s_t": self.s_t.clone()}

    def load_state_dict(self, state: Mapping) -> None:
        if state["s_t"].numel() != self.s_t.numel():
            raise ValueError(f"trend moments of dimension {state['s_t'].numel()}, expected {self.s_t.numel()}")
        self.n, self.t_mean, self.s_tt = int(state["n"]), float(state["t_mean"]), float(state["s_tt"])
        self.s_t = state["s_t"].to(torch.float64).clone()


def trend_share_of(sequence: Tensor, times: Tensor | None = None) -> float:
    """Trend share of a time-ordered (n, d) sequence (rows = snapshots or deviations; times default 0..n-1)."""
    n = sequence.shape[0]
    if sequence.dim() != 2 or n < 2:
        raise ValueError(f"trend_share_of needs an (n >= 2, d) sequence, got shape {tuple(sequence.shape)}")
    t = torch.arange(n, dtype=torch.float64) if times is None else torch.as_tensor(times, dtype=torch.float64)
    t = t - t.mean()
    s_tt = float(t @ t)
    if s_tt <= 0:
        raise ValueError("trend_share_of: the times must not all be equal")
    trend = total = 0.0
    for start in range(0, sequence.shape[1], _CHUNK):
        x = sequence[:, start:start + _CHUNK].double()
        x = x - x.mean(0)
        trend += float((t @ x).square().sum()) / s_tt
        total += float(x.square().sum())
    return trend / total if total > 0 else float("nan")


def _gram(rows: Tensor) -> Tensor:
    g = torch.zeros((rows.shape[0], rows.shape[0]), dtype=torch.float64)
    for start in range(0, rows.shape[1], _CHUNK):
        x = rows[:, start:start + _CHUNK].double()
        g += x @ x.T
    return g


def top_direction(deviations: Tensor) -> tuple[Tensor, float]:
    """Top right singular vector u (unit, float64) of the (K, d) deviations and its share of their energy.

    Oriented forward in time: the projections ``deviations @ u`` have a non-negative correlation with the
    row index (rows oldest first). Through the K x K Gram matrix; never d x d.
    """
    if deviations.dim() != 2 or deviations.shape[0] < 1:
        raise ValueError(f"top_direction needs (K >= 1, d) deviations, got shape {tuple(deviations.shape)}")
    evals, evecs = torch.linalg.eigh(_gram(deviations))
    if float(evals[-1]) <= 0:
        raise ValueError("top_direction: the deviations are all zero")
    a = evecs[:, -1]  # deviations @ u is proportional to the Gram matrix's top eigenvector
    idx = torch.arange(a.numel(), dtype=torch.float64)
    if float((idx - idx.mean()) @ a) < 0:
        a = -a
    u = (a @ deviations.double()) / math.sqrt(float(evals[-1]))
    return u / u.norm(), float(evals[-1] / evals.clamp_min(0).sum())


def top_direction_cosine(deviations: Tensor, displacement: Tensor) -> float:
    """Cosine of the (time-oriented) top deviation direction with ``displacement`` (SWAG mean - start)."""
    u, _ = top_direction(deviations)
    disp = displacement.reshape(-1).double()
    norm = float(disp.norm())
    return float(u @ disp) / norm if norm > 0 else float("nan")


def floor_share(variance: Tensor, floor: float, rtol: float = 1e-6) -> float:
    """Share of coordinates whose (clamped) variance is at the floor, i.e. ``<= floor * (1 + rtol)``
    (``rtol`` absorbs the float32 rounding of a stored variance)."""
    return float((variance.double() <= float(floor) * (1.0 + rtol)).double().mean())


@dataclass
class SWAGDiagnostics:
    """The stationarity diagnostic of one SWAG prior (``to_metadata`` gives a JSON-ready dict)."""

    n: int                      # length of the sequence the trend share was computed on
    trend_source: str           # "snapshots" (TrendMoments) or "deviations" (the kept K deviations)
    trend_share: float
    trend_share_stationary: float  # its expectation for a stationary sequence, 1 / (n - 1)
    drift_threshold: float
    top_direction_cosine: float
    top_direction_share: float  # share of the deviations' energy along their top direction
    floor_share: float
    median_variance: float
    drift_dominated: bool

    def to_metadata(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def diagnose(*, deviations: Tensor, mean: Tensor, start: Tensor, variance: Tensor, variance_floor: float,
             trend: TrendMoments | None = None, m2: Tensor | None = None) -> SWAGDiagnostics:
    """All three statistics and the verdict.

    ``deviations`` (K, d) oldest first; ``mean`` the SWAG mean; ``start`` the flat starting checkpoint;
    ``variance`` the diagonal variance as clamped, in the units of ``variance_floor``. With ``trend`` and
    ``m2`` the trend share covers every snapshot, otherwise the K kept deviations.
    """
    if trend is not None:
        if m2 is None:
            raise ValueError("diagnose: trend moments need the collector's m2 (sum of squared deviations)")
        n, share, source = trend.n, trend.share(m2), "snapshots"
    else:
        n, source = deviations.shape[0], "deviations"
        share = trend_share_of(deviations) if n >= 2 else float("nan")
    top = top_direction(deviations) if deviations.shape[0] >= 1 else (None, float("nan"))
    cos = top_direction_cosine(deviations, mean.double() - start.double()) if top[0] is not None else math.nan
    threshold = drift_threshold(n)
    return SWAGDiagnostics(
        n=int(n), trend_source=source, trend_share=share,
        trend_share_stationary=1.0 / (n - 1) if n > 1 else float("nan"), drift_threshold=threshold,
        top_direction_cosine=cos, top_direction_share=top[1], floor_share=floor_share(variance, variance_floor),
        median_variance=float(variance.double().median()),
        drift_dominated=bool(math.isfinite(share) and share > threshold),
    )


def prior_diagnostics(prior: GaussianPrior, start: Mapping[str, Tensor] | Tensor,
                      variance_floor: float | None = None, trend: TrendMoments | None = None,
                      m2: Tensor | None = None) -> SWAGDiagnostics:
    """The diagnostic of a saved SWAG prior against its starting checkpoint (a state dict or flat tensor).

    Uses the prior's factor rows as the deviations (they are the kept deviations scaled by one constant,
    oldest first, so every statistic is unchanged; a factor truncated by SVD has lost its time order and is
    refused). ``variance_floor`` is in the prior's units; default: the SWAG config's floor from the metadata,
    halved for the paper's ``1/2 diag + 1/2 low-rank`` prior.
    """
    if prior.metadata.get("truncate", {}).get("how") == "svd":
        raise ValueError("prior_diagnostics: an SVD-truncated factor has no time order; use the stored prior")
    if variance_floor is None:
        try:
            variance_floor = float(prior.metadata["swag"]["variance_floor"])
        except (KeyError, TypeError):
            raise ValueError("prior_diagnostics: the prior's metadata has no swag.variance_floor; pass "
                             "variance_floor") from None
        if str(prior.metadata.get("covariance", "")).startswith("1/2"):
            variance_floor *= 0.5
    flat = prior.flatten({n: start[n] for n in prior.names}) if isinstance(start, Mapping) else start
    return diagnose(deviations=prior.factor, mean=prior.mean, start=flat.detach().cpu(), variance=prior.variance,
                    variance_floor=variance_floor, trend=trend, m2=m2)


#: the columns of :func:`diagnostics_table`, in order (after ``prior``)
TABLE_COLUMNS = ("pretraining", "source_loss", "n", "trend_source", "trend_share", "trend_share_stationary",
                 "drift_threshold", "top_direction_cosine", "top_direction_share", "floor_share", "median_variance",
                 "drift_dominated", "swag_lr", "swag_weight_decay", "swag_burn_in_cycles", "swag_augment", "note")


def diagnostics_table(metadata: Mapping[str, Mapping]):
    """One row per prior file (``metadata``: path -> the prior's metadata): its stored diagnostic and the SWAG
    settings behind it. A prior without one (imported from the authors' files: no snapshots) keeps a row
    whose diagnostic cells are empty and whose ``note`` says why."""
    import pandas as pd

    rows = []
    for path, meta in metadata.items():
        d = meta.get("diagnostics") or {}
        swag = meta.get("swag") or {}
        note = "" if d else ("imported prior: no SWAG snapshots to diagnose" if meta.get("kind") != "swag"
                             else "learned before the diagnostic existed: relearn it")
        if d.get("drift_dominated"):
            note = "drift-dominated: the prior measures the snapshots' drift, not a posterior's spread"
        rows.append({"prior": str(path), "pretraining": meta.get("pretraining"), "source_loss": meta.get("source_loss"),
                     **{k: d.get(k) for k in TABLE_COLUMNS[2:12]},
                     "swag_lr": swag.get("lr"), "swag_weight_decay": swag.get("weight_decay"),
                     "swag_burn_in_cycles": swag.get("burn_in_cycles"), "swag_augment": swag.get("augment"),
                     "note": note})
    return pd.DataFrame(rows, columns=["prior", *TABLE_COLUMNS])
