"""Segmentation batches of images of different sizes: padded to sides divisible by the output stride.

DeepLab needs sides divisible by its output stride (e.g. the paper's 513 crop -> 528 at stride 16). Padded
pixels get image value 0 and the ignore label, so they are neither trained on nor scored.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayes_transfer.data.scenes import IGNORE_INDEX
from bayes_transfer.device import RuntimeOptions


def pad_batch(images: Tensor, masks: Tensor, multiple: int, ignore_index: int = IGNORE_INDEX
              ) -> tuple[Tensor, Tensor]:
    """Pad a batch on the bottom/right to a multiple of ``multiple`` (image 0, mask ``ignore_index``)."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), value=0.0)
        masks = F.pad(masks, (0, pw, 0, ph), value=ignore_index)
    return images, masks


def pad_collate(batch: Sequence[tuple[Tensor, Tensor]], multiple: int = 1, ignore_index: int = IGNORE_INDEX
                ) -> tuple[Tensor, Tensor]:
    """Stack (image (C, H, W), mask (H, W)) pairs of different sizes, padded to a common, divisible size."""
    h = max(int(x.shape[-2]) for x, _ in batch)
    w = max(int(x.shape[-1]) for x, _ in batch)
    h, w = h + (-h) % multiple, w + (-w) % multiple
    xs = torch.zeros((len(batch), batch[0][0].shape[0], h, w), dtype=batch[0][0].dtype)
    ys = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        xs[i, :, :x.shape[-2], :x.shape[-1]] = x
        ys[i, :y.shape[-2], :y.shape[-1]] = torch.as_tensor(y, dtype=torch.long)
    return xs, ys


class PadTo:
    """Padding to a multiple of ``multiple``: :meth:`batch` pads a stacked batch (masks as int64); called on a
    list of (image, mask) samples it collates them (a picklable ``collate_fn`` for data-loader workers)."""

    def __init__(self, multiple: int = 1, ignore_index: int = IGNORE_INDEX) -> None:
        self.multiple, self.ignore_index = int(multiple), int(ignore_index)

    def batch(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        return pad_batch(images, masks.long(), self.multiple, self.ignore_index)

    def __call__(self, samples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        return pad_collate(samples, self.multiple, self.ignore_index)


def padded_batches(dataset: Dataset, batch_size: int, device: torch.device, pad: PadTo,
                   runtime: RuntimeOptions | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """The whole of ``dataset`` in order (evaluation), in padded batches on ``device``."""
    runtime = runtime or RuntimeOptions()
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        for i in range(0, len(x), batch_size):
            xb, yb = pad.batch(x[i:i + batch_size], y[i:i + batch_size])
            yield xb.to(device), yb.to(device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=runtime.num_workers,
                        collate_fn=pad, pin_memory=runtime.pin_memory)
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
