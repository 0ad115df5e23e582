"""CIFAR-10.1 v6 (Recht et al., 2018), the paper's shifted CIFAR-10 test set, read from its official .npy files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from bayes_transfer.io import require_files
from bayes_transfer.data.transforms import paper_transforms

__all__ = ["CIFAR10_CLASSES", "CIFAR101", "load_cifar101"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_CIFAR101_DATA = "cifar10.1_v6_data.npy"
_CIFAR101_LABELS = "cifar10.1_v6_labels.npy"
_CIFAR101_SOURCE = (
    "get both files from the official CIFAR-10.1 release, "
    "https://github.com/modestyachts/CIFAR-10.1 (folder 'datasets'), and put them directly "
    "in root"
)


class CIFAR101(Dataset):
    """CIFAR-10.1 v6 (Recht et al., 2018), the paper's shifted CIFAR-10 test set.

    Reads ``root/cifar10.1_v6_data.npy`` (uint8 ``(N, 32, 32, 3)``, N = 2,000 in the
    release) and ``root/cifar10.1_v6_labels.npy`` (``N`` integer labels in CIFAR-10's class
    order). Items are ``(transform(PIL image), int label)``; without a transform the PIL
    image itself. ``data`` and ``targets`` (a list of ints) mirror torchvision's CIFAR10.
    """

    classes = list(CIFAR10_CLASSES)

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        root = Path(root)
        data_path, labels_path = root / _CIFAR101_DATA, root / _CIFAR101_LABELS
        require_files(
            [(str(data_path), data_path.is_file()), (str(labels_path), labels_path.is_file())],
            "CIFAR-10.1 v6 not found",
            root,
            _CIFAR101_SOURCE,
            "",
        )
        data = np.load(data_path, allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
            raise ValueError(
                f"{data_path}: expected a uint8 array of shape (N, 32, 32, 3), got dtype "
                f"{data.dtype} and shape {data.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
            raise ValueError(
                f"{labels_path}: expected a 1-D array of {data.shape[0]} labels (one per image "
                f"in {data_path.name}), got shape {labels.shape}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{labels_path}: expected integer labels, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
            raise ValueError(
                f"{labels_path}: expected labels in 0..{len(CIFAR10_CLASSES) - 1}, got range "
                f"{labels.min()}..{labels.max()}"
            )
        self.root = root
        self.transform = transform
        self.data = data
        self.targets = labels.astype(np.int64).tolist()

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def load_cifar101(root: str | Path, image_size: int = 224) -> CIFAR101:
    """CIFAR-10.1 v6 with the paper's test transform at ``image_size``."""
    return CIFAR101(root, transform=paper_transforms(image_size, train=False))
