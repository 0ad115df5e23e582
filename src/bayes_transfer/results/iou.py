"""Segmentation metrics: the confusion matrix of two label maps, per-class IoU and mean IoU.

Label maps are integer tensors of any (equal) shape; pixels whose target equals ``ignore_index`` (255, the
PASCAL VOC convention) are skipped. IoU is a fraction in ``[0, 1]``, never a percentage; a class with zero
union is NaN and left out of the mean. :class:`ConfusionMatrix` accumulates a large evaluation set batch by
batch; :func:`mean_iou_torchmetrics` is the cross-check against torchmetrics (imported only there).
"""

from __future__ import annotations

import math

import torch

from bayes_transfer.results.metrics import check_num_classes

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "mean_iou_torchmetrics", "ConfusionMatrix"]



def _check_label_maps(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None, fn: str
) -> torch.Tensor:
    """Validate two integer label maps; return the boolean mask of pixels to score."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{fn}: pred and target must be torch.Tensor, got "
            f"{type(pred).__name__} and {type(target).__name__}"
        )
    check_num_classes(num_classes, fn)
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
        check_num_classes(num_classes, "ConfusionMatrix")
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
