"""Image transforms of the paper-scale datasets: the ImageNet fine-tuning recipe and the SimCLR augmentation.

:func:`paper_transforms` maps a PIL RGB image to a normalised ``(3, s, s)`` tensor (random resized crop and flip
for training, resize and centre crop otherwise); :func:`simclr_augment` draws one SimCLR view of a batch of
normalised images (the source loss of SWAG with a SimCLR checkpoint at paper scale). torchvision is imported
only when a transform is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "paper_transforms", "simclr_augment"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return int(image_size)


def paper_transforms(image_size: int, train: bool) -> Callable:
    """The paper's image transform (PIL RGB image -> normalised float tensor ``(3, s, s)``).

    ``train=True``: ``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip`` + ``ToTensor``
    + ImageNet normalisation. ``train=False``: ``Resize(int(image_size * 256 / 224))`` +
    ``CenterCrop(image_size)`` + ``ToTensor`` + ImageNet normalisation.
    """
    from torchvision import transforms as T

    size = _check_image_size(image_size)
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return T.Compose(
            [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
        )
    return T.Compose(
        [T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize]
    )


def simclr_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One SimCLR view of a batch of normalised images ``(B, 3, H, W)``: random resized crop (scale 0.08-1),
    horizontal flip, colour jitter (brightness, contrast, saturation 0.8, applied with p = 0.8) and
    greyscale (p = 0.2), per image, all drawn from ``generator``. The source loss of SWAG with a SimCLR
    checkpoint at paper scale (the digits have their own augmentation).
    """
    import torch.nn.functional as F

    b, _, h, w = x.shape
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    img = (x * std + mean).clamp(0, 1)
    u = torch.rand(b, 9, generator=generator)
    out = []
    for i in range(b):
        scale = 0.08 + 0.92 * float(u[i, 0])
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(u[i, 1]))
        ch = max(1, min(h, round(math.sqrt(scale * h * w / ratio))))
        cw = max(1, min(w, round(math.sqrt(scale * h * w * ratio))))
        top = int(float(u[i, 2]) * (h - ch + 1))
        left = int(float(u[i, 3]) * (w - cw + 1))
        crop = img[i:i + 1, :, top:top + ch, left:left + cw]
        view = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
        if u[i, 4] < 0.5:
            view = view.flip(-1)
        if u[i, 5] < 0.8:
            factors = 1 + 0.8 * (2 * torch.rand(3, generator=generator) - 1)
            view = (view * factors[0]).clamp(0, 1)  # brightness
            grey = view.mean()
            view = ((view - grey) * factors[1] + grey).clamp(0, 1)  # contrast
            lum = (0.299 * view[0] + 0.587 * view[1] + 0.114 * view[2]).unsqueeze(0)
            view = ((view - lum) * factors[2] + lum).clamp(0, 1)  # saturation
        if u[i, 6] < 0.2:
            view = (0.299 * view[0] + 0.587 * view[1] + 0.114 * view[2]).expand(3, h, w)
        out.append(view)
    return (torch.stack(out) - mean) / std
