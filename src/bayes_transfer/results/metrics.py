"""Evaluation metrics for classification (accuracy, NLL, ECE, Brier) and segmentation (mean IoU).

Classification functions take predictive *probabilities* ``probs`` of shape ``(N, C)`` (for a
Bayesian model average: already averaged over posterior samples) and integer ``labels`` ``(N,)``.
All rates (accuracy, error, ECE, IoU) are fractions in ``[0, 1]``, never percentages. Scalar
metrics are returned as Python floats; tensors stay on the device of the inputs.
"""

from __future__ import annotations

import math
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
    "reliability_bins",
    "classification_metrics",
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "mean_iou_torchmetrics",
    "ConfusionMatrix",
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


def _check_num_classes(num_classes: int, fn: str) -> None:
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
        _check_num_classes(num_classes, fn)
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
    """Expected calibration error (top-label, L1, ``n_bins`` equal-width bins) via torchmetrics.

    torchmetrics bins confidences as ``[lo, hi)`` in float32 (with 1.0 in a bin of its own);
    :func:`reliability_bins` uses ``(lo, hi]``, so the two only differ when a confidence falls
    exactly on a bin edge.
    """
    _check_probs_labels(probs, labels, "ece")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"ece: n_bins must be a positive int, got {n_bins!r}")
    from torchmetrics.functional.classification import multiclass_calibration_error

    # clamp so that torchmetrics never mistakes rows within the sum tolerance for logits
    value = multiclass_calibration_error(
        probs.clamp(0.0, 1.0),
        labels.long(),
        num_classes=probs.shape[1],
        n_bins=n_bins,
        norm="l1",
    )
    return float(value.item())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Brier score: mean over examples of ``sum_c (p_c - onehot_c)^2`` (range ``[0, 2]``)."""
    _check_probs_labels(probs, labels, "brier")
    p = probs.double()
    onehot = torch.zeros_like(p).scatter_(1, labels.long().unsqueeze(1), 1.0)
    return (p - onehot).pow(2).sum(dim=1).mean().item()


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> pd.DataFrame:
    """Reliability-diagram table over ``n_bins`` equal-width confidence bins on ``[0, 1]``.

    Bins are ``(lo, hi]`` (the first one also holds confidence 0); edges are ``i / n_bins`` and
    confidences (top-1 probabilities) are compared in float64. Returns a DataFrame with one row per
    bin and columns ``bin_lower``, ``bin_upper``, ``count`` (int), ``mean_confidence`` and
    ``accuracy`` (both NaN for empty bins). ``sum(count * |accuracy - mean_confidence|) / N`` over
    non-empty bins is the ECE.
    """
    import pandas as pd

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
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1].tolist(),
            "bin_upper": edges[1:].tolist(),
            "count": count.tolist(),
            "mean_confidence": mean_conf.tolist(),
            "accuracy": acc.tolist(),
        }
    )


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


# --------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------


def _check_label_maps(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None, fn: str
) -> torch.Tensor:
    """Validate two integer label maps; return the boolean mask of pixels to score."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{fn}: pred and target must be torch.Tensor, got "
            f"{type(pred).__name__} and {type(target).__name__}"
        )
    _check_num_classes(num_classes, fn)
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{fn}: {name} must be an integer label map, got dtype {t.dtype}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"{fn}: ignore_index must be an int or None, got {ignore_index!r}")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target.ne(ignore_index)
    for name, t in (("target", target), ("pred", pred)):
        vals = t[valid]
        if vals.numel() and (vals.min() < 0 or vals.max() >= num_classes):
            extra = "" if ignore_index is None else f" (or ignore_index={ignore_index} in target)"
            raise ValueError(
                f"{fn}: {name} values must lie in [0, {num_classes - 1}]{extra}, got values in "
                f"[{int(vals.min())}, {int(vals.max())}]"
            )
    return valid


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Confusion matrix ``(num_classes, num_classes)`` int64, rows = target, columns = pred.

    ``pred`` and ``target`` are integer label maps of any (equal) shape; pixels whose target equals
    ``ignore_index`` are skipped (``None`` skips nothing).
    """
    valid = _check_label_maps(pred, target, num_classes, ignore_index, "confusion_matrix")
    t = target[valid].long()
    p = pred[valid].long()
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Per-class IoU ``tp / (tp + fp + fn)`` from a confusion matrix, float64 ``(C,)``.

    Classes with zero union (absent from both target and pred), and the class ``ignore_index`` if
    it is a valid class index, are NaN.
    """
    if not isinstance(cm, torch.Tensor) or cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        shape = tuple(cm.shape) if isinstance(cm, torch.Tensor) else type(cm).__name__
        raise ValueError(f"iou_per_class: cm must be a square (C, C) tensor, got {shape}")
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = (tp / union).masked_fill(union == 0, float("nan"))
    if ignore_index is not None and 0 <= ignore_index < cm.shape[0]:
        iou[ignore_index] = float("nan")
    return iou


def _nanmean(x: torch.Tensor) -> float:
    keep = ~torch.isnan(x)
    return x[keep].mean().item() if keep.any() else math.nan


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> float:
    """Mean IoU in ``[0, 1]`` over classes present in target or pred (zero-union classes excluded).

    Pixels with target ``ignore_index`` are skipped; if ``ignore_index`` is itself a class index,
    that class is also left out of the mean (as torchmetrics does). NaN when nothing is scored.
    """
    cm = confusion_matrix(pred, target, num_classes, ignore_index)
    return _nanmean(iou_per_class(cm, ignore_index))


def mean_iou_torchmetrics(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> float:
    """Mean IoU via torchmetrics' ``multiclass_jaccard_index`` (``average="macro"``)."""
    from torchmetrics.functional.classification import multiclass_jaccard_index

    _check_label_maps(pred, target, num_classes, ignore_index, "mean_iou_torchmetrics")
    value = multiclass_jaccard_index(
        pred.reshape(-1).long(),
        target.reshape(-1).long(),
        num_classes=num_classes,
        average="macro",
        ignore_index=ignore_index,
    )
    return float(value.item())


class ConfusionMatrix:
    """Streaming confusion matrix for evaluating a large segmentation set batch by batch.

    The running matrix (int64, rows = target, columns = pred) lives on the device of the first
    batch passed to :meth:`update`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        _check_num_classes(num_classes, "ConfusionMatrix")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ConfusionMatrix: ignore_index must be an int or None, got {ignore_index!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget all accumulated counts."""
        self._matrix = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> "ConfusionMatrix":
        """Add one batch of integer label maps (any equal shapes); returns ``self``."""
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self._matrix is None:
            self._matrix = cm
        else:
            self._matrix += cm.to(self._matrix.device)
        return self

    @property
    def matrix(self) -> torch.Tensor:
        """The accumulated ``(C, C)`` int64 matrix (zeros on the CPU before any update)."""
        if self._matrix is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self._matrix

    def iou_per_class(self) -> torch.Tensor:
        """Per-class IoU (float64, NaN for zero-union or ignored classes)."""
        return iou_per_class(self.matrix, self.ignore_index)

    def mean_iou(self) -> float:
        """Mean IoU over classes with non-zero union; NaN before any scored pixel."""
        return _nanmean(self.iou_per_class())

    def pixel_accuracy(self) -> float:
        """Fraction of scored pixels labelled correctly; NaN before any scored pixel."""
        m = self.matrix
        total = m.sum().item()
        return m.diagonal().sum().item() / total if total else math.nan
