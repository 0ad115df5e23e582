"""The authors' released prior format ("priorBox"): four ``torch.save`` files sharing one prefix.

========================  ==================================================================================
file                      content
========================  ==================================================================================
``PREFIX_mean.pt``        the SWA mean, a flat (d,) tensor
``PREFIX_variance.pt``    the diagonal variance, (d,)
``PREFIX_covmat.pt``      the low-rank factor, (R, d) (or stored (d, R)), already divided by sqrt(R - 1)
``PREFIX_model.pt``       the backbone state dict (torchvision key layout, no ``fc.*``); its parameter entries
                          (buffers excluded) give the names and shapes of the flat order
========================  ==================================================================================

:func:`read_priorbox` turns them into a :class:`~bayes_transfer.priors.gaussian.GaussianPrior` as stored
(covariance ``diag(variance) + covmat^T covmat``; rescale with ``convention="priorbox"`` to reproduce the
authors' use) and :func:`write_priorbox` writes a prior back in this format. The public entry points are
:meth:`GaussianPrior.from_priorbox` and :meth:`GaussianPrior.to_priorbox`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from bayes_transfer.io import require_files, save_torch
from bayes_transfer.priors.gaussian import GaussianPrior

__all__ = ["PRIORBOX_PARTS", "BUFFER_SUFFIXES", "priorbox_files", "read_priorbox", "write_priorbox"]

#: the four files of a released prior, ``<prefix>_<part>.pt``
PRIORBOX_PARTS = ("mean", "variance", "covmat", "model")
#: where the released priors come from
PRIORBOX_SOURCE = ("download the priors released with the paper (github.com/hsouri/BayesianTransferLearning, "
                   "'priors' links in its README) and place the four files at these paths")

#: suffixes of BatchNorm buffers in a state dict; buffers are never part of a prior.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def priorbox_files(prefix: str | os.PathLike) -> dict[str, Path]:
    """``{part: Path("<prefix>_<part>.pt")}`` for the four parts of :data:`PRIORBOX_PARTS`."""
    return {k: Path(f"{prefix}_{k}.pt") for k in PRIORBOX_PARTS}


def read_priorbox(prefix: str | os.PathLike, metadata: dict | None = None) -> GaussianPrior:
    """The prior stored at ``<prefix>_*.pt``, as stored (see the module docstring).

    Raises ``FileNotFoundError`` listing the four expected files (:func:`bayes_transfer.io.require_files`) if one
    is missing, and ``ValueError`` if the files disagree (sizes, shapes).
    """
    prefix = str(prefix)
    files = priorbox_files(prefix)
    require_files([(str(p), p.is_file()) for p in files.values()], "priorBox files not found", Path(prefix).parent,
                  PRIORBOX_SOURCE)
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    mean, variance, covmat, model = (load(files[k]) for k in PRIORBOX_PARTS)
    if isinstance(model, Mapping) and "state_dict" in model:
        model = model["state_dict"]
    names, shapes = [], []
    for key, value in model.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.endswith(BUFFER_SUFFIXES) or key.startswith("fc."):
            continue
        names.append(key)
        shapes.append(tuple(value.shape))
    mean, variance = mean.reshape(-1).float(), variance.reshape(-1).float()
    covmat = covmat.float()
    if covmat.dim() == 2 and covmat.shape[0] == mean.numel() and covmat.shape[1] != mean.numel():
        covmat = covmat.T  # stored d x R
    meta = {
        "source": "priorbox",
        "prefix": prefix,
        "rank": int(covmat.shape[0]),
        "factor_row_order": "oldest first",
    }
    meta.update(metadata or {})
    try:
        return GaussianPrior(mean, variance, covmat, names, shapes, meta)
    except ValueError as err:
        raise ValueError(f"priorBox files at {prefix}_*.pt are inconsistent: {err}") from err


def write_priorbox(
    prior: GaussianPrior, prefix: str | os.PathLike, model_state: Mapping[str, Tensor] | None = None
) -> None:
    """Write ``prior`` as the four files at ``<prefix>_*.pt`` (the inverse of :func:`read_priorbox`).

    ``model_state`` defaults to the prior's mean in the shapes of its parameters. Each file is written
    atomically.
    """
    files = priorbox_files(prefix)
    if model_state is None:
        model_state = prior.unflatten(prior.mean)
    save_torch(prior.mean.clone(), files["mean"])
    save_torch(prior.variance.clone(), files["variance"])
    save_torch(prior.factor.clone(), files["covmat"])
    save_torch({k: v.clone() for k, v in model_state.items()}, files["model"])
