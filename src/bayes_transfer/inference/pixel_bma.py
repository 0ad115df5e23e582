"""The per-pixel Bayesian model average of a segmentation chain, scored by mean IoU.

The predictive probabilities of the kept samples are averaged per pixel (SGD: the final model alone), the
arg-max is scored with torchmetrics' ``MulticlassJaccardIndex`` (macro mean over classes present in target
or prediction, ``ignore_index`` 255) accumulated over the whole evaluation set, and cross-checked against
our own streaming :class:`~bayes_transfer.results.iou.ConfusionMatrix`. The average is taken batch by
batch on the device, not with :class:`~bayes_transfer.inference.bma.BayesianModelAverage` (which keeps
float64 copies of a whole evaluation set: ~45 GB of probabilities for Pascal VOC val), so the chain keeps
its samples' state dicts (:class:`PixelAverage`) and scores them once it has finished.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bayes_transfer.data.padding import PadTo, padded_batches
from bayes_transfer.data.scenes import IGNORE_INDEX
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.inference.samples import Diverged


@torch.no_grad()
def evaluate(model: nn.Module, samples: Sequence[Mapping[str, Tensor]], eval_set: Dataset, num_classes: int,
             device: torch.device, batch_size: int = 32, multiple: int = 16, ignore_index: int = IGNORE_INDEX,
             num_workers: int = 0) -> dict:
    """Mean IoU of the per-pixel Bayesian model average of ``samples`` (state dicts of ``model``).

    Returns ``miou`` (torchmetrics' Jaccard index, macro over classes present in target or prediction,
    ignore label skipped), ``miou_confusion`` (the same from our confusion matrix; must agree),
    ``iou_per_class`` (NaN -> None for absent classes), ``pixel_accuracy``, ``pixel_nll`` (mean -log of
    the averaged probability of the true label over scored pixels) and ``finite``.
    """
    from torchmetrics.classification import MulticlassJaccardIndex

    from bayes_transfer.results.iou import ConfusionMatrix
    from bayes_transfer.results.metrics import PROB_FLOOR

    if not samples:
        raise ValueError("evaluate: no samples to average")
    members = []
    for state in samples:
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        members.append(m.eval())
    jaccard = MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=ignore_index
                                     ).to(device)
    cm = ConfusionMatrix(num_classes, ignore_index)
    nll_sum, scored, finite = 0.0, 0, True
    runtime = runtime_options(device, num_workers=num_workers)
    for xb, yb in padded_batches(eval_set, batch_size, device, PadTo(multiple, ignore_index), runtime):
        xb = xb.contiguous(memory_format=torch.channels_last)
        probs = sum(torch.softmax(m(xb).float(), dim=1) for m in members) / len(members)
        if not torch.all(torch.isfinite(probs)):
            finite = False
            break
        pred = probs.argmax(dim=1)
        jaccard.update(pred, yb)
        cm.update(pred, yb)
        valid = yb.ne(ignore_index)
        if valid.any():
            p_true = probs.gather(1, yb.clamp(0, num_classes - 1).unsqueeze(1)).squeeze(1)[valid]
            nll_sum += float(-torch.log(p_true.double().clamp_min(PROB_FLOOR)).sum())
            scored += int(valid.sum())
    if not finite:
        return {"finite": False}
    iou = cm.iou_per_class()
    return {
        "finite": True,
        "miou": float(jaccard.compute()),
        "miou_confusion": cm.mean_iou(),
        "iou_per_class": [None if math.isnan(v) else float(v) for v in iou.tolist()],
        "pixel_accuracy": cm.pixel_accuracy(),
        "pixel_nll": nll_sum / scored if scored else float("nan"),
        "num_samples": len(members),
        "scored_pixels": scored,
    }


class PixelAverage:
    """A segmentation chain's keeper: each sample's state dict; at the end the metrics of :func:`evaluate`
    on ``eval_set`` (non-finite predictions raise :class:`~bayes_transfer.inference.samples.Diverged`)."""

    def __init__(self, eval_set: Dataset, num_classes: int, device: torch.device, pad: PadTo,
                 batch_size: int = 32, runtime: RuntimeOptions | None = None) -> None:
        self.eval_set, self.num_classes, self.device, self.pad = eval_set, num_classes, torch.device(device), pad
        self.batch_size, self.runtime = batch_size, runtime or RuntimeOptions()
        self.samples: list[dict[str, Tensor]] = []

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def add(self, model: nn.Module, step: int) -> None:
        self.samples.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def result(self, model: nn.Module) -> dict:
        metrics = evaluate(model, self.samples, self.eval_set, self.num_classes, self.device, self.batch_size,
                           self.pad.multiple, self.pad.ignore_index, self.runtime.num_workers)
        if not metrics.pop("finite"):
            raise Diverged("non-finite predictions")
        return {"metrics": metrics}

    def state_dict(self) -> dict:
        return {"samples": self.samples}

    def load_state_dict(self, state: Mapping) -> None:
        self.samples = list(state["samples"])
