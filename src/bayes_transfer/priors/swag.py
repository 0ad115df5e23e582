"""SWAG: a Gaussian fitted to snapshots of a feature extractor's parameters (Maddox et al. 2019).

:class:`SWAGCollector` takes snapshots *by parameter name*, keeps float64 running moments with
Welford's update (so the diagonal variance does not cancel catastrophically, as E[x^2] - E[x]^2 does in float32) and the last K
deviations from the running mean. :meth:`SWAGCollector.prior` turns them into the paper's prior
``N(mean, 1/2 diag(v) + 1/2 F^T F)`` with ``F = D / sqrt(K - 1)``. The collector also keeps streaming moments
of (time, parameters) over every snapshot (:class:`~bayes_transfer.priors.diagnostics.TrendMoments`), for the
stationarity diagnostic of :mod:`bayes_transfer.priors.diagnostics`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Mapping

import torch
from torch import Tensor, nn

from bayes_transfer import __version__
from bayes_transfer.priors.diagnostics import TrendMoments
from bayes_transfer.priors.gaussian import GaussianPrior

VARIANCE_FLOOR = 1e-30


class SWAGCollector:
    """Running SWAG moments over a fixed set of named parameters.

    Parameters
    ----------
    params:
        mapping name -> parameter (e.g. the feature extractor's parameters; buffers are never included).
    max_rank:
        K, the number of most recent deviations kept for the low-rank part.
    variance_floor:
        the diagonal variance is clamped at this value (it can be 0 for parameters that never moved).
    """

    def __init__(self, params: Mapping[str, Tensor], max_rank: int = 20, variance_floor: float = VARIANCE_FLOOR):
        if max_rank < 0:
            raise ValueError(f"max_rank must be >= 0, got {max_rank}")
        self.names = list(params)
        if not self.names:
            raise ValueError("SWAGCollector needs at least one parameter")
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.max_rank = int(max_rank)
        self.variance_floor = float(variance_floor)
        d = sum(math.prod(s) for s in self.shapes)
        self.n_snapshots = 0
        self.mean = torch.zeros(d, dtype=torch.float64)
        self.m2 = torch.zeros(d, dtype=torch.float64)  # sum of squared deviations (Welford)
        self.deviations: deque[Tensor] = deque(maxlen=self.max_rank)
        self.trend = TrendMoments(d)  # (time, theta) co-moments of every snapshot: the trend share

    @property
    def dim(self) -> int:
        return self.mean.numel()

    def flat(self, params: Mapping[str, Tensor] | nn.Module) -> Tensor:
        """Our parameters of ``params`` (a dict of named tensors or a module) as one float64 vector."""
        if isinstance(params, nn.Module):
            params = dict(params.named_parameters())
        return self._flat(params)

    def _flat(self, params: Mapping[str, Tensor]) -> Tensor:
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"snapshot is missing parameter {missing[0]!r}")
        for n, s in zip(self.names, self.shapes):
            if tuple(params[n].shape) != s:
                raise ValueError(f"snapshot parameter {n!r} has shape {tuple(params[n].shape)}, expected {s}")
        return torch.cat([params[n].detach().reshape(-1).to("cpu", torch.float64) for n in self.names])

    @torch.no_grad()
    def collect(self, params: Mapping[str, Tensor] | nn.Module, t: float | None = None) -> None:
        """Add one snapshot (a dict of named tensors, or a module whose named parameters contain ours) taken
        at time ``t`` (e.g. the training step; default: the snapshot's index), for the trend moments."""
        theta = self.flat(params)
        n = self.n_snapshots
        delta = theta - self.mean
        self.trend.observe(delta, float(n if t is None else t))
        self.mean.add_(delta / (n + 1))
        self.m2.add_(delta * (theta - self.mean))
        self.n_snapshots = n + 1
        if self.max_rank > 0:
            # deviation from the running mean that includes this snapshot (as in SWAG's reference)
            self.deviations.append((theta - self.mean).float())

    def state_dict(self) -> dict:
        """Everything needed to continue collecting after a restart (see :meth:`load_state_dict`)."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes], "max_rank": self.max_rank,
                "n_snapshots": self.n_snapshots, "mean": self.mean.clone(), "m2": self.m2.clone(),
                "deviations": [d.clone() for d in self.deviations], "trend": self.trend.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict` taken from a collector over the same parameters."""
        if list(state["names"]) != self.names or [tuple(s) for s in state["shapes"]] != self.shapes:
            raise ValueError("the saved SWAG state covers other parameters than this collector")
        if int(state["max_rank"]) != self.max_rank:
            raise ValueError(f"the saved SWAG state has max_rank {state['max_rank']}, this collector {self.max_rank}")
        self.n_snapshots = int(state["n_snapshots"])
        self.mean = state["mean"].to(torch.float64).clone()
        self.m2 = state["m2"].to(torch.float64).clone()
        self.deviations = deque((d.clone() for d in state["deviations"]), maxlen=self.max_rank)
        if "trend" not in state:
            raise ValueError("the saved SWAG state has no trend moments (written by an older version); "
                             "delete it to start over")
        self.trend.load_state_dict(state["trend"])

    def diagonal_variance(self) -> Tensor:
        """Population variance of the snapshots (divided by their number), clamped at the floor."""
        return (self.m2 / max(self.n_snapshots, 1)).clamp_min(self.variance_floor)

    def deviation_matrix(self) -> Tensor:
        """D, the (K, d) stack of the kept deviations, oldest first."""
        if not self.deviations:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        return torch.stack(list(self.deviations))

    def prior(self, rank: int | None = None, metadata: dict | None = None) -> GaussianPrior:
        """The SWAG prior N(mean, 1/2 diag(v) + 1/2 F^T F), F = D / sqrt(K - 1), stored in float32.

        ``rank`` keeps the last ``rank`` deviations (default: all kept). K = 1 gives no low-rank part.
        """
        if self.n_snapshots < 2:
            raise ValueError(f"SWAG needs at least 2 snapshots to estimate a variance, got {self.n_snapshots}")
        dev = self.deviation_matrix()
        if rank is not None:
            if rank < 0 or rank > dev.shape[0]:
                raise ValueError(f"rank must be in [0, {dev.shape[0]}], got {rank}")
            dev = dev[dev.shape[0] - rank:]
        k = dev.shape[0]
        factor = dev.double() / math.sqrt(k - 1) if k > 1 else dev[:0].double()
        meta = {
            "kind": "swag",
            "n_snapshots": self.n_snapshots,
            "rank": int(factor.shape[0]),
            "covariance": "1/2 diag + 1/2 low-rank",
            "library_version": __version__,
        }
        meta.update(metadata or {})
        return GaussianPrior(
            self.mean.float(),
            (0.5 * self.diagonal_variance()).float(),
            (factor / math.sqrt(2.0)).float(),
            self.names,
            self.shapes,
            meta,
        )
