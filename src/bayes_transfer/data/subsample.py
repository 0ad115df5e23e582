"""Class-balanced, seeded subsampling of a labelled pool, and the checks of a pool where data enter the protocol.

:func:`balanced_subsample` draws the subsample; given the number of classes it also refuses labels out of range
and a class the pool lacks (it would be empty in every subsample). :func:`check_pool` refuses labels out of range
and NaN or infinite pixels, each with an error naming the data and what was expected.
"""

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


def check_labels(labels: Any, num_classes: int, where: str) -> np.ndarray:
    """``labels`` as int64, checked to lie in ``0 .. num_classes - 1`` (``ValueError`` naming ``where``)."""
    y = label_array(labels, where)
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise ValueError(f"labels of {where} must lie in 0..{num_classes - 1} ({num_classes} classes), got "
                         f"{y[bad[0]]} at index {bad[0]} ({bad.size} label(s) out of range)")
    return y


def check_pool(labels: Any, num_classes: int, where: str, pixels: torch.Tensor | None = None) -> None:
    """Refuse a pool whose labels are out of range or whose ``pixels`` (if given) are NaN or infinite."""
    check_labels(labels, num_classes, where)
    if pixels is not None and pixels.is_floating_point():
        finite = torch.isfinite(pixels.reshape(len(pixels), -1)).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise ValueError(f"pixels of {where} must be finite numbers, got NaN or inf in example "
                             f"{int(bad[0])} ({bad.numel()} example(s) affected)")


def balanced_subsample(labels: Any, n: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """Return ``n`` sorted indices into ``labels`` with classes as balanced as possible.

    Every class gets ``n // K`` examples (``K`` classes); the ``n % K`` extra examples go to
    distinct, randomly chosen classes. If ``n < K``, ``n`` distinct random classes get one
    example each. All choices come from ``np.random.default_rng(seed)``, so the result is
    deterministic per seed. Raises ``ValueError`` if ``n <= 0``, ``n`` exceeds the pool, or a
    class has fewer examples than its share.

    ``num_classes``: the classes are ``0 .. num_classes - 1``; labels out of range are refused, and so is a
    pool that lacks a class when ``n >= num_classes`` (that class would be empty in the subsample, its share
    silently going to the others). The classes drawn from are those present, so the draw is the same.
    """
    y = label_array(labels) if num_classes is None else check_labels(labels, num_classes, "the pool")
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
    if num_classes is not None and n >= num_classes and k < num_classes:
        absent = np.setdiff1d(np.arange(num_classes), classes)
        raise ValueError(f"class {absent[0]} has no example in the pool of {y.size} ({absent.size} of "
                         f"{num_classes} classes absent), so it would be empty in the balanced subsample of "
                         f"n={n}; expected every class 0..{num_classes - 1} in the pool")
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
