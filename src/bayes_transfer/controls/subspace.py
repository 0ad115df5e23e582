"""Where a control's learned prior puts its variance: the known answer of the controls' construction.

The prior is over the feature extractor ``body.weight`` (features x inputs). Its covariance C seen from the
input space is M = sum_f C[(f, .), (f, .)] (inputs x inputs): the variance of the feature rows along each input
direction. :func:`subspace_shares` gives the share of trace(M) in each of the task's subspaces (S, V, V', N) and
the shares of the top low-rank (SWAG deviation) directions; :func:`shared_subspace_contrast` the ratio of the
prior's least variance in the shared subspace V to its largest variance in the nuisance subspace N.
"""

from __future__ import annotations

from typing import Mapping

import torch

from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["input_covariance", "subspace_shares", "shared_subspace_contrast", "BACKBONE"]

#: the parameter of the control network the prior covers
BACKBONE = "body.weight"


def _weight_shape(prior: GaussianPrior) -> tuple[int, int]:
    if prior.names != [BACKBONE] or len(prior.shapes[0]) != 2:
        raise ValueError(f"expected a prior over the control network's {BACKBONE!r} only, got {prior.names}")
    return prior.shapes[0]


def input_covariance(prior: GaussianPrior) -> torch.Tensor:
    """M (inputs x inputs, float64): the prior's covariance of each feature row, summed over the features."""
    f, d = _weight_shape(prior)
    var = prior.variance.double().reshape(f, d)
    factor = prior.factor.double().reshape(prior.rank, f, d)
    return torch.diag(var.sum(0)) + torch.einsum("kfi,kfj->ij", factor, factor)


def _share(m: torch.Tensor, basis: torch.Tensor) -> float:
    return float(torch.trace(basis.T @ m @ basis) / torch.trace(m))


def subspace_shares(prior: GaussianPrior, subspaces: Mapping[str, torch.Tensor], top: int = 5) -> dict:
    """``{"covariance": {name: share of trace(M)}, "top_directions": {name: share of the top ``top`` right
    singular vectors' energy}}`` for each subspace (columns: orthonormal basis of the input space)."""
    f, d = _weight_shape(prior)
    m = input_covariance(prior)
    out = {"covariance": {name: _share(m, b) for name, b in subspaces.items()}, "top_directions": {}}
    if prior.rank:
        _, _, vh = torch.linalg.svd(prior.factor.double(), full_matrices=False)
        dirs = vh[:top].reshape(-1, f, d)  # each direction as a features x inputs matrix, unit norm
        energy = torch.einsum("kfi,kfj->ij", dirs, dirs)
        out["top_directions"] = {name: _share(energy, b) for name, b in subspaces.items()}
    return out


def shared_subspace_contrast(prior: GaussianPrior, shared: torch.Tensor, nuisance: torch.Tensor) -> float:
    """min over unit v in V of v^T M v, divided by max over unit u in N of u^T M u: >> 1 when the prior is
    wide along every shared direction and tight along every nuisance direction."""
    m = input_covariance(prior)
    low = torch.linalg.eigvalsh(shared.T @ m @ shared)[0]
    high = torch.linalg.eigvalsh(nuisance.T @ m @ nuisance)[-1]
    return float(low / high)
