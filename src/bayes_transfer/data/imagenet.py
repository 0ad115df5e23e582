"""ImageNet-1k's training set, the source task of SWAG at paper scale (not needed with the released priors)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from bayes_transfer.io import require_files
from bayes_transfer.data.transforms import paper_transforms

__all__ = ["load_imagenet_train"]

_IMAGENET_SOURCE = (
    "the ImageNet-1k (ILSVRC 2012) training images from https://image-net.org (login required), "
    "extracted into one folder per class (n01440764/, ...) under root/imagenet/train"
)


def load_imagenet_train(root: str | Path, image_size: int = 224) -> Dataset:
    """ImageNet-1k's training set (the source task of SWAG at paper scale) as a torchvision ImageFolder.

    Expects ``root/imagenet/train/<wnid>/*.JPEG`` (the usual extracted layout); classes are the sorted
    folder names. Only needed with ``prior.source: swag``; the released priors need no ImageNet.
    """
    from torchvision.datasets import ImageFolder

    folder = Path(root) / "imagenet" / "train"
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    require_files([(str(folder) + "/", bool(classes))], "ImageNet training set not found", Path(root),
                  _IMAGENET_SOURCE, " Or import the authors' released priors instead (prior.source: priorbox).")
    return ImageFolder(str(folder), transform=paper_transforms(image_size, train=True))
