"""Class-balanced, seeded subsampling of a labelled pool."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def label_array(labels: Any, where: str = "labels", allow_whole_floats: bool = False) -> np.ndarray:
    """Integer labels as a 1-D int64 numpy array; ``where`` names their source in errors.

    ``allow_whole_floats`` accepts floating-point labels that are whole numbers (e.g. read from a .mat file).
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels of {where} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        whole = (allow_whole_floats and np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                 and np.all(arr == np.round(arr)))
        if not whole:
            raise ValueError(f"labels of {where} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def balanced_subsample(labels: Any, n: int, seed: int) -> np.ndarray:
    """Return ``n`` sorted indices into ``labels`` with classes as balanced as possible.

    Every class gets ``n // K`` examples (``K`` classes); the ``n % K`` extra examples go to
    distinct, randomly chosen classes. If ``n < K``, ``n`` distinct random classes get one
    example each. All choices come from ``np.random.default_rng(seed)``, so the result is
    deterministic per seed. Raises ``ValueError`` if ``n <= 0``, ``n`` exceeds the pool, or a
    class has fewer examples than its share.
    """
    y = label_array(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an int, got {n!r}")
    if n <= 0:
        raise ValueError(f"n must be positive, got n={n}")
    if n > y.size:
        raise ValueError(f"n={n} is larger than the pool of {y.size} examples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    rng = np.random.default_rng(int(seed))
    classes = np.unique(y)
    k = classes.size
    # A fixed random order of each class's examples; a class's share is a prefix of it.
    members = [rng.permutation(np.flatnonzero(y == c)) for c in classes]

    quota = np.full(k, n // k, dtype=np.int64)
    extra = rng.choice(k, size=n % k, replace=False)
    quota[extra] += 1

    chosen = []
    for c, idx, q in zip(classes, members, quota):
        if q > idx.size:
            raise ValueError(
                f"class {c.item()!r} has only {idx.size} examples in the pool of {y.size} "
                f"but its balanced share of n={n} is {q}"
            )
        chosen.append(idx[:q])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
