"""Labels and index splits of torch datasets: read labels without decoding images, subsets, stratified splits.

:func:`labels_of` gives the integer labels of a dataset (torchvision's, ``TensorDataset``, ``Subset``,
``ConcatDataset``); :func:`split_train_val` is the seeded, stratified validation split of the datasets without an
official one (CIFAR, Pets); :func:`subset` wraps chosen indices. The class-balanced training subsample itself is
:func:`bayes_transfer.data.subsample.balanced_subsample` on the same labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from bayes_transfer.data.subsample import label_array

__all__ = ["labels_of", "subset", "split_train_val"]


def _as_label_array(values: Any, where: str) -> np.ndarray:
    return label_array(values, where, allow_whole_floats=True)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Integer labels (int64 numpy array, dataset order) without decoding any image.

    Uses ``.targets`` (CIFAR, :class:`CIFAR101`, ImageFolder), ``._labels`` (Flowers102,
    OxfordIIITPet), the second tensor of a ``TensorDataset``, and recurses through ``Subset``
    and ``ConcatDataset``. Any other dataset is iterated (``dataset[i][1]``), which does load
    every item.
    """
    if isinstance(dataset, Subset):
        idx = np.asarray(dataset.indices, dtype=np.int64)
        return labels_of(dataset.dataset)[idx]
    if isinstance(dataset, ConcatDataset):
        parts = [labels_of(d) for d in dataset.datasets]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    where = type(dataset).__name__
    for attr in ("targets", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return _as_label_array(values, f"{where}.{attr}")
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return _as_label_array(dataset.tensors[1], f"{where}.tensors[1]")
    return _as_label_array([int(dataset[i][1]) for i in range(len(dataset))], where)


def subset(dataset: Dataset, indices: Any) -> Subset:
    """``torch.utils.data.Subset`` of ``dataset`` at ``indices`` (checked to be in range)."""
    idx = np.asarray(indices.detach().cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D sequence of ints, got shape {idx.shape}")
    n = len(dataset)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(
            f"indices must lie in [0, {n}) for a dataset of length {n}, got range "
            f"{idx.min()}..{idx.max()}"
        )
    return Subset(dataset, idx.astype(np.int64).tolist())


def split_train_val(labels: Any, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of ``range(len(labels))`` into ``(train_idx, val_idx)``.

    Each class contributes to the validation set in proportion to its size (floor of
    ``n_val * count / N``; the remaining examples go to the classes with the largest
    remainders, ties to the lower class). Which examples of a class are taken comes from
    ``np.random.default_rng(seed)``. Both index arrays are sorted int64 and together cover
    every index exactly once.
    """
    y = _as_label_array(labels, "split_train_val")
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 1:
        raise ValueError(f"n_val must be a positive int, got {n_val!r}")
    if n_val >= y.size:
        raise ValueError(
            f"n_val={n_val} must be smaller than the number of examples ({y.size}) so that "
            "the training split is not empty"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    classes, counts = np.unique(y, return_counts=True)
    exact = n_val * counts / y.size
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n_val - int(quota.sum())]] += 1
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    )
    val = np.sort(val).astype(np.int64)
    train = np.setdiff1d(np.arange(y.size, dtype=np.int64), val)
    return train, val
