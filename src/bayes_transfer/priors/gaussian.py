"""Gaussian priors over a feature extractor's parameters: diagonal plus low rank.

A :class:`GaussianPrior` holds a mean ``mu`` (d), a diagonal variance ``v`` (d) and a low-rank factor
``F`` (k x d); its covariance is ``diag(v) + F^T F``. A learned SWAG prior (see :mod:`bayes_transfer.priors.swag`)
is one of these with ``v = v_swag / 2`` and ``F = F_swag / sqrt(2)``, i.e. the paper's
``1/2 Sigma_diag + 1/2 Sigma_low-rank``.

The flat parameter order is the order of ``names``; each name has a shape, so the same prior maps onto
any module whose parameters carry the same names (a classifier's backbone, a segmentation encoder).

Nothing here ever builds a d x d matrix except :meth:`GaussianPrior.covariance` (for tests on small d).
The log-density uses the Woodbury identity with the k x k capacitance matrix ``I + F diag(1/v) F^T``
computed and factorised in float64.

Its per-step form over live parameters is :class:`~bayes_transfer.priors.bound.BoundPrior`
(:meth:`GaussianPrior.bind`); the authors' released file format is read and written by
:mod:`bayes_transfer.priors.priorbox` (:meth:`GaussianPrior.from_priorbox`, :meth:`GaussianPrior.to_priorbox`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import torch
from torch import Tensor, nn

from bayes_transfer import __version__
from bayes_transfer.integrity import CHECKSUM_KEY, load_torch_file, stamp
from bayes_transfer.io import save_torch

if TYPE_CHECKING:
    from bayes_transfer.priors.bound import BoundPrior

FORMAT = "bayes_transfer.GaussianPrior"
FORMAT_VERSION = 1
LOG_2PI = math.log(2.0 * math.pi)


class PriorMismatchError(ValueError):
    """A prior does not fit the parameters it is applied to (names, shapes or sizes differ)."""


def _as_1d(t: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(t)
    if t.dim() != 1:
        raise ValueError(f"{what} must be a 1-d tensor, got shape {tuple(t.shape)}")
    return t


@dataclass
class GaussianPrior:
    """N(mean, diag(variance) + factor^T factor) over a flat parameter vector.

    Parameters
    ----------
    mean, variance:
        1-d tensors of length d. ``variance`` must be positive.
    factor:
        (k, d) low-rank factor, k >= 0 (``None`` means k = 0, a purely diagonal prior).
    names, shapes:
        parameter names and their shapes, in flat order. Default: one parameter ``"theta"`` of shape (d,).
    metadata:
        free-form description (architecture, source task and loss, rank, checkpoint, library version, ...).
    """

    mean: Tensor
    variance: Tensor
    factor: Tensor | None = None
    names: list[str] | None = None
    shapes: list[tuple[int, ...]] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = _as_1d(self.mean, "mean")
        self.variance = _as_1d(self.variance, "variance").to(self.mean.dtype)
        d = self.mean.numel()
        if self.variance.numel() != d:
            raise ValueError(f"variance has {self.variance.numel()} entries, mean has {d}")
        if self.factor is None:
            self.factor = self.mean.new_zeros((0, d))
        self.factor = torch.as_tensor(self.factor).to(self.mean.dtype)
        if self.factor.dim() != 2 or self.factor.shape[1] != d:
            raise ValueError(f"factor must have shape (k, {d}), got {tuple(self.factor.shape)}")
        if not torch.all(torch.isfinite(self.mean)) or not torch.all(torch.isfinite(self.factor)):
            raise ValueError("prior mean and factor must be finite")
        if not torch.all(torch.isfinite(self.variance)) or not torch.all(self.variance > 0):
            bad = int(torch.nonzero(~(torch.isfinite(self.variance) & (self.variance > 0)))[0])
            raise ValueError(
                f"prior variance must be finite and > 0; entry {bad} is {self.variance[bad].item()!r}"
            )
        if self.names is None:
            self.names, self.shapes = ["theta"], [(d,)]
        if self.shapes is None or len(self.shapes) != len(self.names):
            raise ValueError("names and shapes must be given together and have the same length")
        self.names = list(self.names)
        self.shapes = [tuple(int(s) for s in shape) for shape in self.shapes]
        total = sum(math.prod(s) for s in self.shapes)
        if total != d:
            raise ValueError(f"parameter shapes add up to {total} entries, but the prior has d = {d}")
        self.metadata = dict(self.metadata)
        self._capacitance_cache: tuple | None = None

    # ------------------------------------------------------------------ basic properties
    @property
    def dim(self) -> int:
        return self.mean.numel()

    @property
    def rank(self) -> int:
        return self.factor.shape[0]

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    def __repr__(self) -> str:  # short: the tensors are huge
        return (
            f"GaussianPrior(d={self.dim}, rank={self.rank}, params={len(self.names)}, "
            f"dtype={self.mean.dtype}, metadata={self.metadata})"
        )

    def _replace(self, **changes) -> "GaussianPrior":
        kw = dict(
            mean=self.mean, variance=self.variance, factor=self.factor, names=self.names,
            shapes=self.shapes, metadata=dict(self.metadata),
        )
        kw.update(changes)
        return GaussianPrior(**kw)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def isotropic(
        cls,
        params: Mapping[str, Tensor],
        variance: float,
        *,
        centred_at_params: bool = False,
        metadata: dict | None = None,
    ) -> "GaussianPrior":
        """Isotropic prior ``N(m, variance * I)`` over the named ``params``.

        ``centred_at_params=False`` gives the zero-mean "non-learned" prior of the paper; ``True`` centres it
        at the given (pre-trained) values, the "learned mean only" prior of Fig. 3c.
        """
        if not variance > 0 or not math.isfinite(variance):
            raise ValueError(f"isotropic prior variance must be finite and > 0, got {variance!r}")
        names = list(params)
        flat = torch.cat([params[n].detach().reshape(-1).float().cpu() for n in names])
        mean = flat.clone() if centred_at_params else torch.zeros_like(flat)
        meta = {"kind": "isotropic", "centred_at_params": centred_at_params, "alpha": float(variance)}
        meta.update(metadata or {})
        return cls(
            mean, torch.full_like(flat, float(variance)), None, names,
            [tuple(params[n].shape) for n in names], meta,
        )

    # ------------------------------------------------------------------ transformations
    def rescale(self, prior_scale: float, convention: str = "exact", eps: float = 0.1) -> "GaussianPrior":
        """Scale the covariance by ``prior_scale`` = lambda (> 0).

        ``convention="exact"`` (this project's): the result has covariance exactly ``lambda * Sigma``
        (variance * lambda, factor * sqrt(lambda)).
        ``convention="priorbox"`` reproduces the authors' released code: variance * lambda + eps and
        factor * lambda, so the low-rank part scales by lambda**2.
        """
        prior_scale = float(prior_scale)
        if not (prior_scale > 0) or not math.isfinite(prior_scale):
            raise ValueError(f"rescale: prior_scale (lambda) must be a finite number > 0, got {prior_scale!r}")
        meta = dict(self.metadata)
        meta["rescale"] = {"prior_scale": prior_scale, "convention": convention} | (
            {"eps": eps} if convention == "priorbox" else {}
        )
        if convention == "exact":
            return self._replace(
                variance=self.variance * prior_scale, factor=self.factor * math.sqrt(prior_scale), metadata=meta
            )
        if convention == "priorbox":
            return self._replace(
                variance=self.variance * prior_scale + eps, factor=self.factor * prior_scale, metadata=meta
            )
        raise ValueError(f"rescale: convention must be 'exact' or 'priorbox', got {convention!r}")

    def truncate(self, rank: int, how: str = "svd") -> "GaussianPrior":
        """Keep ``rank`` directions of the low-rank part; the diagonal is unchanged.

        ``how="svd"``: the top-``rank`` right singular directions of the factor (the best rank-``rank``
        approximation of ``F^T F``). ``how="first"``: the first ``rank`` stored rows, as the authors did.
        ``rank=0`` leaves a purely diagonal prior.
        """
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"truncate: rank must be an int, got {rank!r}")
        if rank < 0:
            raise ValueError(f"truncate: rank must be >= 0, got {rank}")
        if rank > self.rank:
            raise ValueError(f"truncate: rank {rank} is above the stored rank {self.rank}")
        meta = dict(self.metadata)
        meta["truncate"] = {"rank": rank, "how": how}
        if how == "first":
            factor = self.factor[:rank].clone()
        elif how == "svd":
            if rank == 0:
                factor = self.factor[:0].clone()
            else:
                # thin SVD of the k x d factor through its k x k Gram matrix (never d x d)
                f64 = self.factor.double()
                u, s, vh = torch.linalg.svd(f64, full_matrices=False)
                factor = (s[:rank, None] * vh[:rank]).to(self.factor.dtype)
        else:
            raise ValueError(f"truncate: how must be 'svd' or 'first', got {how!r}")
        meta["rank"] = rank
        return self._replace(factor=factor, metadata=meta)

    def to(self, *args, **kwargs) -> "GaussianPrior":
        return self._replace(
            mean=self.mean.to(*args, **kwargs),
            variance=self.variance.to(*args, **kwargs),
            factor=self.factor.to(*args, **kwargs),
        )

    # ------------------------------------------------------------------ densities
    def _capacitance(self) -> tuple[Tensor, Tensor]:
        """Cholesky factor L of C = I + F diag(1/v) F^T (float64) and log det(Sigma).

        Accumulated over chunks of the d coordinates, so no float64 copy of the whole k x d factor is made.
        """
        if self._capacitance_cache is None:
            k, d = self.factor.shape
            cap = torch.eye(k, dtype=torch.float64, device=self.factor.device)
            chunk = max(1, (1 << 22) // max(k, 1))
            for start in range(0, d if k else 0, chunk):
                f64 = self.factor[:, start:start + chunk].double()
                cap += (f64 / self.variance[start:start + chunk].double()) @ f64.T
            chol = torch.linalg.cholesky(cap)
            logdet = torch.log(self.variance.double()).sum() + 2.0 * torch.log(torch.diagonal(chol)).sum()
            self._capacitance_cache = (chol, logdet)
        return self._capacitance_cache

    def flatten(self, theta: Tensor | Mapping[str, Tensor]) -> Tensor:
        """A flat vector (or batch (n, d)) from a flat tensor or a dict of named tensors."""
        if isinstance(theta, Mapping):
            self.check_params(theta)
            return torch.cat([theta[n].reshape(-1) for n in self.names])
        theta = torch.as_tensor(theta)
        if theta.shape[-1] != self.dim:
            raise PriorMismatchError(
                f"expected a flat parameter vector of length {self.dim}, got shape {tuple(theta.shape)}"
            )
        return theta

    def log_prob(self, theta: Tensor | Mapping[str, Tensor]) -> Tensor:
        """Log-density at ``theta``: a flat (d,) or batched (n, d) tensor, or a dict of named tensors.

        Differentiable with respect to ``theta``; O(d k + k^3); the capacitance is float64.
        Raises FloatingPointError if the result is not finite.
        """
        x = self.flatten(theta)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        mean = self.mean.to(device=x.device, dtype=dtype)
        var = self.variance.to(device=x.device, dtype=dtype)
        fac = self.factor.to(device=x.device, dtype=dtype)
        r = x - mean
        a = r / var
        quad = (r * a).sum(-1).double()
        chol, logdet = self._capacitance()
        if self.rank > 0:
            b = (a @ fac.T).double()  # (..., k)
            c = torch.cholesky_solve(b.unsqueeze(-1), chol.to(b.device)).squeeze(-1)
            quad = quad - (b * c).sum(-1)
        out = -0.5 * (self.dim * LOG_2PI + logdet.to(quad.device) + quad)
        if not torch.all(torch.isfinite(out)):
            raise FloatingPointError(
                "prior log-density is not finite (parameters diverged or the prior is degenerate)"
            )
        return out.to(dtype)

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws as an (n, d) tensor: mean + sqrt(v) * z1 + F^T z2."""
        d, k = self.dim, self.rank
        z1 = torch.randn((n, d), generator=generator, dtype=torch.float64)
        z2 = torch.randn((n, k), generator=generator, dtype=torch.float64)
        out = self.mean.double() + self.variance.double().sqrt() * z1 + z2 @ self.factor.double()
        return out.to(self.mean.dtype)

    def covariance(self) -> Tensor:
        """Dense d x d covariance (only for small d, e.g. in tests)."""
        if self.dim > 20000:
            raise MemoryError(f"covariance(): refusing to build a dense {self.dim} x {self.dim} matrix")
        return torch.diag(self.variance) + self.factor.T @ self.factor

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into a dict of named tensors with the prior's shapes."""
        flat = self.flatten(flat)
        return {
            n: t.reshape(s) for n, t, s in zip(self.names, torch.split(flat, self.numels), self.shapes)
        }

    # ------------------------------------------------------------------ checks and binding
    def check_params(self, params: Mapping[str, Tensor]) -> None:
        """Raise PriorMismatchError naming the first parameter whose name or shape differs."""
        given = list(params)
        for i, (name, shape) in enumerate(zip(self.names, self.shapes)):
            if i >= len(given):
                raise PriorMismatchError(f"parameter {name!r} of the prior is missing from the model")
            if given[i] != name:
                missing = name not in params
                raise PriorMismatchError(
                    f"parameter #{i}: the prior expects {name!r} but the model has {given[i]!r}"
                    + (" (the prior's parameter is absent from the model)" if missing else "")
                )
            if tuple(params[name].shape) != shape:
                raise PriorMismatchError(
                    f"parameter {name!r}: the prior has shape {shape}, the model {tuple(params[name].shape)}"
                )
        if len(given) > len(self.names):
            raise PriorMismatchError(
                f"parameter {given[len(self.names)]!r} of the model is not covered by the prior"
            )

    def bind(self, params: Mapping[str, nn.Parameter] | Iterable[tuple[str, nn.Parameter]]) -> "BoundPrior":
        """Attach the prior to live named parameters for fast per-step use (see
        :class:`~bayes_transfer.priors.bound.BoundPrior`)."""
        from bayes_transfer.priors.bound import BoundPrior

        return BoundPrior(self, dict(params))

    # ------------------------------------------------------------------ files
    def state(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "mean": self.mean.detach().cpu(),
            "variance": self.variance.detach().cpu(),
            "factor": self.factor.detach().cpu(),
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write one self-describing file (atomically: a crash never leaves a half-written prior); its metadata
        carries the checksum of its tensors, names and shapes (:func:`bayes_transfer.integrity.stamp`)."""
        save_torch(stamp(self.state()), path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "GaussianPrior":
        """Read a :meth:`save` file. An unreadable (truncated) file or one whose tensors do not match their
        stored checksum raises :class:`~bayes_transfer.integrity.IntegrityError` naming it; a file without a
        checksum (an earlier version's) loads with a warning."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"prior file {path} does not exist")
        state = load_torch_file(path, "prior file", map_location=map_location)
        if isinstance(state, dict) and isinstance(state.get("metadata"), dict):
            state["metadata"] = {k: v for k, v in state["metadata"].items() if k != CHECKSUM_KEY}
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a {FORMAT} file (for the authors' released priors use "
                "GaussianPrior.from_priorbox(prefix))"
            )
        if state.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {state['format_version']}; this library reads <= {FORMAT_VERSION}")
        return cls(
            state["mean"], state["variance"], state["factor"], state["names"],
            [tuple(s) for s in state["shapes"]], state.get("metadata", {}),
        )

    @classmethod
    def from_priorbox(cls, prefix: str | os.PathLike, metadata: dict | None = None) -> "GaussianPrior":
        """Import a prior released by the authors (priorBox files ``<prefix>_*.pt``), as stored.

        See :mod:`bayes_transfer.priors.priorbox` for the format; the result has covariance
        ``diag(variance) + covmat^T covmat`` (rescale with ``convention="priorbox"`` to reproduce the authors' use).
        """
        from bayes_transfer.priors.priorbox import read_priorbox

        return read_priorbox(prefix, metadata)

    def to_priorbox(self, prefix: str | os.PathLike, model_state: Mapping[str, Tensor] | None = None) -> None:
        """Write the authors' four-file format (the inverse of :meth:`from_priorbox`)."""
        from bayes_transfer.priors.priorbox import write_priorbox

        write_priorbox(self, prefix, model_state)
