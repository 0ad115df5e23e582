"""The synthetic transfer task of the pipeline's positive and negative controls (seeded, deterministic).

Inputs are x in R^D (D = 64, shaped 1 x 8 x 8 like the digits). A seeded orthonormal basis Q of R^D is cut into
four subspaces: S (``source_dims``: where the source classes differ), V (``shared_dims``: the shared subspace),
V' (``shared_dims``: the negative control's unrelated subspace) and N (the rest: nuisance).

* **Source task, positive control**: x = S (m_y + noise) + V (label-free variation); nothing in V' or N. The
  classes overlap (``source_noise``), so SGD on the source loss keeps fluctuating and SWAG measures that
  fluctuation: a linear feature extractor's rows move only within the span of the source inputs, so its SWAG
  covariance is wide in S + V and exactly at the variance floor in V' + N (the model starts its features at 0).
* **Source task, negative control**: the same with V' in place of V: the prior is wide in S + V', tight in V.
* **Downstream task** (the same for both): the classes differ only in V (class means ``downstream_separation``
  apart, ``downstream_noise`` within a class), with nuisance noise (``nuisance_std``) in every one of the N
  directions (and ``downstream_source_std`` in S, 0 by default). The learned features read S, where the
  downstream inputs are empty, so the downstream fit must move the feature extractor into V, and a small
  training set cannot tell V from the many nuisance directions: exactly the information the positive
  control's covariance carries and the negative control's lacks.

By default (``rotate: false``) the four subspaces are disjoint sets of pixels (a seeded permutation), because
half of SWAG's covariance is a per-coordinate diagonal: in a rotated basis that half spreads the V variance over
every direction and the prior carries the structure only through its low-rank half (``rotate: true`` builds that
case; docs/controls.md gives its measured contrast).

:func:`control_data` builds the tensors; :func:`control_task` wraps them in the stages' :class:`~bayes_transfer.
stages.task.Task` from a ``data`` config section (``dataset: control_positive`` or ``control_negative``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["VARIANTS", "DATASETS", "ControlSpec", "ControlData", "control_data", "control_task", "variant_of"]

#: the two controls: the prior learned where the downstream task needs it, and where it does not
VARIANTS = ("positive", "negative")
#: the dataset names the stages see (``data.dataset``)
DATASETS = tuple(f"control_{v}" for v in VARIANTS)


@dataclass(frozen=True)
class ControlSpec:
    """The task's sizes and noise levels (the ``data`` section's keys besides ``dataset``)."""

    seed: int = 0  # fixes the basis, the class means and every example (independent of the run seeds)
    # False: S, V, V', N are sets of pixels (coordinate subspaces), so SWAG's diagonal half respects them as its
    # low-rank half does; True: a random rotation, which only the low-rank half can follow (docs/controls.md)
    rotate: bool = False
    side: int = 8  # images are 1 x side x side, D = side**2
    num_classes: int = 5
    source_dims: int = 4  # dim S
    shared_dims: int = 4  # dim V = dim V'
    source_separation: float = 3.0  # distance of the source class means (a regular simplex in S)
    source_noise: float = 1.0  # within-class std in S: overlapping classes keep SGD noisy
    shared_std: float = 1.0  # std of the source inputs along V (V' in the negative control)
    downstream_separation: float = 3.0
    downstream_noise: float = 1.0  # within-class std in V
    nuisance_std: float = 1.0  # std of the downstream inputs along each of the N directions
    downstream_source_std: float = 0.0  # std of the downstream inputs along S (0: the source features read nothing)
    n_source: int = 2000
    n_pool: int = 500  # downstream training pool (evaluation fits draw their subsamples from it)
    n_val: int = 200  # the validation split that scores the tuning fits
    n_test: int = 1000

    @property
    def dim(self) -> int:
        return self.side * self.side

    def check(self) -> None:
        if self.source_dims + 2 * self.shared_dims >= self.dim:
            raise ValueError(f"data: source_dims + 2 * shared_dims ({self.source_dims + 2 * self.shared_dims}) must "
                             f"be below the input dimension side**2 = {self.dim}")
        if self.num_classes - 1 > min(self.source_dims, self.shared_dims):
            raise ValueError(f"data: num_classes - 1 ({self.num_classes - 1}) class-mean directions need "
                             "source_dims and shared_dims at least that large")

    @classmethod
    def from_config(cls, data_cfg: Mapping) -> "ControlSpec":
        known = {f.name for f in fields(cls)}
        extra = set(data_cfg) - known - {"dataset"}
        if extra:
            raise ValueError(f"data: unknown keys {sorted(extra)} for a control task; known: {sorted(known)}")
        spec = cls(**{k: v for k, v in data_cfg.items() if k in known})
        spec.check()
        return spec


@dataclass
class ControlData:
    """The tensors of one control and the subspaces they were built from (columns: orthonormal bases)."""

    variant: str
    spec: ControlSpec
    source: TensorDataset
    pool: TensorDataset
    val: TensorDataset
    test: TensorDataset
    subspaces: dict[str, torch.Tensor]  # "S", "V", "V_prime", "N": D x dim, orthonormal columns


def _simplex(num_classes: int, dims: int, separation: float, rng: np.random.Generator) -> np.ndarray:
    """``num_classes`` points in R^dims, pairwise ``separation`` apart (a randomly rotated regular simplex)."""
    e = np.eye(num_classes) - 1.0 / num_classes  # centred vertices, rank num_classes - 1
    u, s, _ = np.linalg.svd(e)
    pts = u[:, : num_classes - 1] * s[: num_classes - 1]  # num_classes x (num_classes - 1)
    pts = pts / np.sqrt(2.0) * separation  # vertices of the standard simplex are sqrt(2) apart
    rot, _ = np.linalg.qr(rng.standard_normal((dims, dims)))
    return np.pad(pts, ((0, 0), (0, dims - pts.shape[1]))) @ rot.T


def _labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


def _dataset(coords: np.ndarray, labels: np.ndarray, side: int) -> TensorDataset:
    x = torch.as_tensor(coords, dtype=torch.float32).reshape(len(labels), 1, side, side)
    return TensorDataset(x, torch.as_tensor(labels, dtype=torch.long))


def control_data(variant: str, spec: ControlSpec | None = None) -> ControlData:
    """The control's source and downstream sets; the same ``spec`` gives the same tensors (float32, CPU)."""
    if variant not in VARIANTS:
        raise ValueError(f"control variant must be one of {VARIANTS}, got {variant!r}")
    spec = spec or ControlSpec()
    spec.check()
    rng = np.random.default_rng(spec.seed)
    q, _ = np.linalg.qr(rng.standard_normal((spec.dim, spec.dim)))
    if not spec.rotate:  # a seeded permutation of the pixels instead of a rotation
        q = np.eye(spec.dim)[:, rng.permutation(spec.dim)]
    s, k = spec.source_dims, spec.shared_dims
    basis = {"S": q[:, :s], "V": q[:, s:s + k], "V_prime": q[:, s + k:s + 2 * k], "N": q[:, s + 2 * k:]}
    src_means = _simplex(spec.num_classes, s, spec.source_separation, rng)
    down_means = _simplex(spec.num_classes, k, spec.downstream_separation, rng)
    varying = basis["V"] if variant == "positive" else basis["V_prime"]
    # the source draws use their own stream per variant only where the variants differ (the V / V' part)
    ys = _labels(spec.n_source, spec.num_classes, rng)
    s_part = src_means[ys] + spec.source_noise * rng.standard_normal((spec.n_source, s))
    v_part = spec.shared_std * rng.standard_normal((spec.n_source, k))
    source = _dataset(s_part @ basis["S"].T + v_part @ varying.T, ys, spec.side)

    def downstream(n: int) -> TensorDataset:
        y = _labels(n, spec.num_classes, rng)
        v = down_means[y] + spec.downstream_noise * rng.standard_normal((n, k))
        noise_s = spec.downstream_source_std * rng.standard_normal((n, s))
        noise_n = spec.nuisance_std * rng.standard_normal((n, basis["N"].shape[1]))
        return _dataset(v @ basis["V"].T + noise_s @ basis["S"].T + noise_n @ basis["N"].T, y, spec.side)

    pool, val, test = downstream(spec.n_pool), downstream(spec.n_val), downstream(spec.n_test)
    return ControlData(variant, spec, source, pool, val, test,
                       {name: torch.as_tensor(b, dtype=torch.float64) for name, b in basis.items()})


def variant_of(dataset: str) -> str:
    """``control_positive`` -> ``positive``; a ValueError for a name that is not a control."""
    if dataset not in DATASETS:
        raise ValueError(f"data.dataset {dataset!r} is not a control; expected one of {DATASETS}")
    return dataset[len("control_"):]


def control_task(data_cfg: Mapping):
    """The control of ``data_cfg`` (``dataset: control_positive | control_negative`` and :class:`ControlSpec`
    keys) as the stages' Task: the source set, the pool (evaluation subsamples), the validation split that scores
    the tuning fits (drawn from the pool, which the validation split is not part of), the test set."""
    from bayes_transfer.stages.task import Task

    variant = variant_of(data_cfg["dataset"])
    d = control_data(variant, ControlSpec.from_config(data_cfg))
    return Task(data_cfg["dataset"], d.source, d.pool, d.test, None, d.spec.num_classes, d.spec.num_classes,
                "accuracy", None, val=d.val, tuning_pool=d.pool)

