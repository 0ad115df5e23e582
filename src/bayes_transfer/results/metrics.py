"""Evaluation metrics for classification: accuracy, per-class accuracy, NLL, ECE, Brier, reliability bins.

The functions take predictive *probabilities* ``probs`` of shape ``(N, C)`` (for a Bayesian model
average: already averaged over posterior samples) and integer ``labels`` ``(N,)``. All rates
(accuracy, error, ECE) are fractions in ``[0, 1]``, never percentages. Scalar metrics are returned
as Python floats; tensors stay on the device of the inputs. The segmentation metrics (confusion
matrix, IoU) are :mod:`bayes_transfer.results.iou`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pandas and torchmetrics are imported lazily: they are slow to import
    import pandas as pd

__all__ = [
    "PROB_FLOOR",
    "SUM_TOLERANCE",
    "accuracy",
    "mean_per_class_accuracy",
    "per_class_accuracy",
    "nll",
    "ece",
    "brier",
    "reliability_table",
    "reliability_bins",
    "classification_metrics",
]

#: Probabilities are clamped from below at this value before taking logs in :func:`nll`, so a
#: predicted probability of exactly zero for the true class costs ``-log(1e-12) ~= 27.6`` nats
#: instead of ``inf``.
PROB_FLOOR = 1e-12

#: Each row of ``probs`` must sum to 1 within this absolute tolerance.
SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def check_num_classes(num_classes: int, fn: str) -> None:
    """Raise ``ValueError`` (naming the function ``fn``) unless ``num_classes`` is a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be a positive int, got {num_classes!r}")


def _check_probs_labels(
    probs: torch.Tensor, labels: torch.Tensor, fn: str, num_classes: int | None = None
) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``probs`` (N, C) and ``labels`` (N,) are valid."""
    if not isinstance(probs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{fn}: probs and labels must be torch.Tensor, got "
            f"{type(probs).__name__} and {type(labels).__name__}"
        )
    if probs.dim() != 2:
        raise ValueError(f"{fn}: probs must have shape (N, C), got {tuple(probs.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{fn}: labels must have shape (N,), got {tuple(labels.shape)}")
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{fn}: probs and labels disagree on N: probs has shape {tuple(probs.shape)}, "
            f"labels has shape {tuple(labels.shape)}"
        )
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"{fn}: probs must be non-empty, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise TypeError(f"{fn}: probs must be a floating-point tensor, got dtype {probs.dtype}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{fn}: labels must be an integer tensor, got dtype {labels.dtype}")
    if num_classes is not None:
        check_num_classes(num_classes, fn)
        if probs.shape[1] != num_classes:
            raise ValueError(
                f"{fn}: probs has {probs.shape[1]} columns but num_classes={num_classes}"
            )
    if not torch.isfinite(probs).all():
        raise ValueError(f"{fn}: probs contains NaN or inf")
    if (probs < 0).any():
        raise ValueError(
            f"{fn}: probs must be probabilities >= 0, got a minimum of {probs.min().item():.6g} "
            "(pass softmax outputs, not logits)"
        )
    row_sums = probs.sum(dim=1, dtype=torch.float64)
    worst = (row_sums - 1.0).abs().max().item()
    if worst > SUM_TOLERANCE:
        raise ValueError(
            f"{fn}: each row of probs must sum to 1 within {SUM_TOLERANCE:g}, but a row is off by "
            f"{worst:.6g} (pass softmax outputs, not logits)"
        )
    n_cls = probs.shape[1]
    lo, hi = int(labels.min().item()), int(labels.max().item())
    if lo < 0 or hi >= n_cls:
        raise ValueError(
            f"{fn}: labels must lie in [0, {n_cls - 1}] (probs has {n_cls} classes), "
            f"got values in [{lo}, {hi}]"
        )


def _confidence_and_correct(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    conf, pred = probs.max(dim=1)
    return conf, pred.eq(labels)


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in ``[0, 1]`` (ties in ``probs`` go to the lowest class index)."""
    _check_probs_labels(probs, labels, "accuracy")
    return probs.argmax(dim=1).eq(labels).double().mean().item()


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class recall as a float64 tensor ``(num_classes,)``; NaN for classes absent from labels."""
    _check_probs_labels(probs, labels, "per_class_accuracy", num_classes)
    labels = labels.long()
    correct = probs.argmax(dim=1).eq(labels)
    hits = torch.bincount(labels[correct], minlength=num_classes).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    out = hits / counts
    return out.masked_fill(counts == 0, float("nan"))


def mean_per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``labels`` of the per-class top-1 accuracy, in ``[0, 1]``."""
    per_class = per_class_accuracy(probs, labels, num_classes)
    present = ~torch.isnan(per_class)
    return per_class[present].mean().item()


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log predictive probability of the true labels (nats).

    Probabilities are clamped below at :data:`PROB_FLOOR` (1e-12) so that a zero probability for
    the true class gives a large finite loss instead of ``inf``.
    """
    _check_probs_labels(probs, labels, "nll")
    p_true = probs.double().gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return (-torch.log(p_true.clamp_min(PROB_FLOOR))).mean().item()


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error: top-label, L1, ``n_bins`` equal-width confidence bins.

    ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|`` over the bins ``[i / n_bins, (i + 1) / n_bins)``
    of the top-1 confidence, with a confidence of exactly 1.0 in a bin of its own, computed in float32:
    torchmetrics' ``multiclass_calibration_error(norm="l1")`` convention, whose value this reproduces to the
    bit (``tests/unit/results/test_metrics.py`` checks it) without importing torchmetrics, which costs a training job
    seconds of start-up. :func:`reliability_bins` uses ``(lo, hi]`` in float64, so the two only differ when
    a confidence falls exactly on a bin edge.
    """
    _check_probs_labels(probs, labels, "ece")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"ece: n_bins must be a positive int, got {n_bins!r}")
    if probs.shape[1] < 2:
        raise ValueError(f"ece: needs at least 2 classes, probs has shape {tuple(probs.shape)}")
    # clamp: rows within the sum tolerance may stray just outside [0, 1]
    conf, pred = probs.clamp(0.0, 1.0).max(dim=1)
    conf = conf.float()
    correct = pred.eq(labels).float()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    idx = torch.bucketize(conf, edges, right=True) - 1  # edges[i] <= conf < edges[i + 1]; 1.0 -> bin n_bins

    def per_bin(values: torch.Tensor) -> torch.Tensor:  # float32 sums in example order
        return torch.zeros(n_bins + 1, dtype=conf.dtype, device=conf.device).scatter_add_(0, idx, values)

    count = per_bin(torch.ones_like(conf))
    mean_conf = torch.nan_to_num(per_bin(conf) / count)  # empty bins: 0 / 0 -> 0
    acc = torch.nan_to_num(per_bin(correct) / count)
    return float(torch.sum(torch.abs(acc - mean_conf) * (count / count.sum())).item())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Brier score: mean over examples of ``sum_c (p_c - onehot_c)^2`` (range ``[0, 2]``)."""
    _check_probs_labels(probs, labels, "brier")
    p = probs.double()
    onehot = torch.zeros_like(p).scatter_(1, labels.long().unsqueeze(1), 1.0)
    return (p - onehot).pow(2).sum(dim=1).mean().item()


def reliability_table(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list]:
    """Reliability-diagram table over ``n_bins`` equal-width confidence bins on ``[0, 1]``, as columns.

    Bins are ``(lo, hi]`` (the first one also holds confidence 0); edges are ``i / n_bins`` and
    confidences (top-1 probabilities) are compared in float64. Returns ``{column: list}`` with one entry
    per bin in the columns ``bin_lower``, ``bin_upper``, ``count`` (int), ``mean_confidence`` and
    ``accuracy`` (both NaN for empty bins). ``sum(count * |accuracy - mean_confidence|) / N`` over
    non-empty bins is the ECE. :func:`reliability_bins` is the same table as a DataFrame.
    """
    _check_probs_labels(probs, labels, "reliability_bins")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"reliability_bins: n_bins must be a positive int, got {n_bins!r}")
    conf, correct = _confidence_and_correct(probs, labels)
    conf = conf.double().clamp(0.0, 1.0).cpu()
    correct = correct.double().cpu()
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    # bucketize with right=False gives i such that edges[i] < conf <= edges[i + 1]; 0 -> bin 0
    idx = torch.bucketize(conf, edges[1:], right=False).clamp_(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    denom = count.double()
    empty = count == 0
    mean_conf = (conf_sum / denom).masked_fill(empty, float("nan"))
    acc = (acc_sum / denom).masked_fill(empty, float("nan"))
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "count": count.tolist(),
        "mean_confidence": mean_conf.tolist(),
        "accuracy": acc.tolist(),
    }


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> pd.DataFrame:
    """:func:`reliability_table` as a DataFrame with one row per bin (pandas is imported here only)."""
    import pandas as pd

    return pd.DataFrame(reliability_table(probs, labels, n_bins))


def classification_metrics(
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    per_class: bool = False,
    n_bins: int = 15,
) -> dict:
    """All classification metrics as a dict of floats.

    Keys: ``accuracy``, ``error`` (``1 - accuracy``), ``nll``, ``ece``, ``brier``,
    ``mean_per_class_accuracy``; with ``per_class=True`` also ``per_class_accuracy`` (a list of
    ``num_classes`` floats, NaN for absent classes). Accuracy, error and ECE are fractions in
    ``[0, 1]``, not percentages.
    """
    _check_probs_labels(probs, labels, "classification_metrics", num_classes)
    acc = accuracy(probs, labels)
    pca = per_class_accuracy(probs, labels, num_classes)
    out = {
        "accuracy": acc,
        "error": 1.0 - acc,
        "nll": nll(probs, labels),
        "ece": ece(probs, labels, n_bins=n_bins),
        "brier": brier(probs, labels),
        "mean_per_class_accuracy": pca[~torch.isnan(pca)].mean().item(),
    }
    if per_class:
        out["per_class_accuracy"] = pca.tolist()
    return out
