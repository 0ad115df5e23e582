"""The paper-scale image datasets, read from disk through torchvision's own dataset classes.

Datasets (``name`` for :func:`load_paper_dataset`) and the splits exposed here:

=============  ==========================================  ===============================
name           torchvision class / layout under ``root``   splits
=============  ==========================================  ===============================
cifar10        ``CIFAR10``: ``cifar-10-batches-py/``        ``train`` (50,000), ``test``
cifar100       ``CIFAR100``: ``cifar-100-python/``          ``train`` (50,000), ``test``
flowers102     ``Flowers102``: ``flowers-102/``             ``train``, ``val``, ``test``
                                                            (the official 1,020 / 1,020 /
                                                            6,149 split, unchanged)
oxford_pets    ``OxfordIIITPet``: ``oxford-iiit-pet/``      ``train`` (= the official
                                                            ``trainval`` list, 3,680; the
                                                            alias ``trainval`` is accepted),
                                                            ``test`` (3,669)
=============  ==========================================  ===============================

Before a torchvision class is constructed the files it needs are checked; when some are
missing (and ``download`` is False) a ``FileNotFoundError`` lists every expected path and
where to get the data (:func:`bayes_transfer.io.require_files`). Nothing is downloaded
unless ``download=True`` is passed, which is handed to torchvision's own download.

The protocol's view of a dataset: :func:`load_pool` (the downstream training pool; Flowers-102's is train +
val) and :func:`prepare_dataset` (the workflow's data check / download, returning a manifest).

The rest of the paper-scale data lives next to this module:

* :mod:`bayes_transfer.data.transforms`: the paper's image transforms (:func:`paper_transforms`, standard
  ImageNet fine-tuning; images are 3-channel RGB PIL images before the transform) and the SimCLR two-view
  augmentation (``simclr_augment``);
* :mod:`bayes_transfer.data.cifar101`: CIFAR-10.1 v6, the shifted test set of CIFAR-10, read from the two
  ``.npy`` files of its official release;
* :mod:`bayes_transfer.data.splits`: ``labels_of`` a dataset without decoding images, the stratified seeded
  ``split_train_val`` for the datasets without an official validation split (CIFAR, Pets), and ``subset``; a
  class-balanced training subset of size ``n`` comes from
  :func:`bayes_transfer.data.subsample.balanced_subsample` on the same labels;
* :mod:`bayes_transfer.data.imagenet`: ImageNet-1k's training set (the source task of SWAG at paper scale).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from bayes_transfer.io import require_files
from bayes_transfer.data.splits import labels_of
from bayes_transfer.data.transforms import paper_transforms

__all__ = [
    "PAPER_DATASETS",
    "PAPER_METRIC",
    "NUM_CLASSES",
    "SPLITS",
    "expected_files",
    "load_paper_dataset",
    "load_pool",
    "prepare_dataset",
]

PAPER_DATASETS = ("cifar10", "cifar100", "flowers102", "oxford_pets")
PAPER_METRIC = {
    "cifar10": "accuracy",
    "cifar100": "accuracy",
    "flowers102": "mean_per_class_accuracy",
    "oxford_pets": "mean_per_class_accuracy",
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "flowers102": 102, "oxford_pets": 37}
SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "flowers102": ("train", "val", "test"),
    "oxford_pets": ("train", "test"),
}

# Files each torchvision class needs, relative to root (a trailing "/" marks a directory),
# and where the data come from. These mirror what the torchvision classes read and check.
_LAYOUT: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(
        f"cifar-10-batches-py/{f}"
        for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    ),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    "flowers102": ("flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"),
    "oxford_pets": (
        "oxford-iiit-pet/images/",
        "oxford-iiit-pet/annotations/trainval.txt",
        "oxford-iiit-pet/annotations/test.txt",
    ),
}
_SOURCE = {
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted in root "
        "(it unpacks to cifar-10-batches-py/)"
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extracted in root "
        "(it unpacks to cifar-100-python/)"
    ),
    "flowers102": (
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ : 102flowers.tgz extracted in "
        "root/flowers-102 (it unpacks to jpg/), plus imagelabels.mat and setid.mat placed in "
        "root/flowers-102"
    ),
    "oxford_pets": (
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz and "
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz, both extracted in "
        "root/oxford-iiit-pet"
    ),
}



# --------------------------------------------------------------------------- file checks
def _check_name(name: Any) -> str:
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(PAPER_DATASETS)}")
    return name


def expected_files(name: str, root: str | Path) -> list[Path]:
    """The paths under ``root`` that :func:`load_paper_dataset` needs for dataset ``name``."""
    _check_name(name)
    return [Path(root) / rel for rel in _LAYOUT[name]]


def _present(path: Path, rel: str) -> bool:
    return path.is_dir() if rel.endswith("/") else path.is_file()


def _check_dataset_files(name: str, root: Path) -> None:
    checks = [
        (str(root / rel) + ("/" if rel.endswith("/") else ""), _present(root / rel, rel))
        for rel in _LAYOUT[name]
    ]
    require_files(
        checks,
        f"dataset {name!r} not found",
        root,
        _SOURCE[name],
        " Or pass download=True to let torchvision download it into root "
        "(needs internet access).",
    )



# --------------------------------------------------------------------------- datasets
def _torchvision_dataset(name: str, root: Path, split: str, transform: Any, download: bool):
    from torchvision import datasets

    if name == "cifar10":
        return datasets.CIFAR10(
            root, train=split == "train", transform=transform, download=download
        )
    if name == "cifar100":
        return datasets.CIFAR100(
            root, train=split == "train", transform=transform, download=download
        )
    if name == "flowers102":
        return datasets.Flowers102(root, split=split, transform=transform, download=download)
    return datasets.OxfordIIITPet(
        root,
        split="trainval" if split == "train" else "test",
        target_types="category",
        transform=transform,
        download=download,
    )


def load_paper_dataset(
    name: str,
    root: str | Path,
    split: str,
    image_size: int = 224,
    train_transform: bool = True,
    download: bool = False,
    transform: Callable | None = None,
) -> Dataset:
    """One split of a paper dataset as the torchvision dataset object.

    ``name`` is one of :data:`PAPER_DATASETS`; ``split`` one of ``SPLITS[name]`` (for
    ``oxford_pets`` ``"trainval"`` is accepted as an alias of ``"train"``). Items are
    ``(image_tensor, int_label)`` with labels ``0 .. NUM_CLASSES[name] - 1``.

    The transform is ``paper_transforms(image_size, train=True)`` for ``split == "train"``
    when ``train_transform`` is True, otherwise the deterministic test transform (so
    ``train_transform=False`` gives un-augmented training images, e.g. for feature
    extraction). An explicit ``transform`` overrides both.

    ``download`` is passed to torchvision's class. With ``download=False`` the expected files
    are checked first and a missing one raises ``FileNotFoundError`` listing every expected
    path and where to get the data; a failed torchvision integrity (md5) check or a file that
    does not parse (truncated, corrupted) is re-raised as a ``RuntimeError`` naming the dataset
    and root.
    """
    _check_name(name)
    if name == "oxford_pets" and split == "trainval":
        split = "train"
    if split not in SPLITS[name]:
        raise ValueError(
            f"dataset {name!r} has splits {', '.join(SPLITS[name])}; got split={split!r}"
        )
    root = Path(root)
    if transform is None:
        transform = paper_transforms(image_size, train=(split == "train" and bool(train_transform)))
    if not download:
        _check_dataset_files(name, root)
    try:
        return _torchvision_dataset(name, root, split, transform, bool(download))
    except Exception as exc:  # noqa: BLE001 - md5 failures, and truncated or corrupted files fail to parse
        if download and not isinstance(exc, RuntimeError):
            raise
        listing = "\n".join(
            f"  {'found  ' if _present(p, rel) else 'MISSING'} {p}"
            for p, rel in zip(expected_files(name, root), _LAYOUT[name])
        )
        raise RuntimeError(
            f"torchvision could not load dataset {name!r} (split {split!r}) from root "
            f"{str(root)!r}: {type(exc).__name__}: {exc}\nFiles that are present but cannot be parsed "
            "or fail torchvision's integrity check (for CIFAR and Flowers-102 it compares md5 "
            "checksums with the official release) are probably truncated, corrupted or not the "
            "official files. Expected paths:\n"
            f"{listing}\nRe-obtain them from {_SOURCE[name]}."
        ) from exc



# --------------------------------------------------------------------------- the paper's protocol
def load_pool(name: str, root: str | Path, image_size: int = 224) -> Dataset:
    """The downstream training pool of ``name``, with training augmentation.

    CIFAR and Pets: the (official) training split. Flowers-102: its ``train`` and ``val`` splits
    together (2,040 images), since the workflow holds its validation data out of each training
    subsample and the paper retrains on training + validation images.
    """
    train = load_paper_dataset(name, root, "train", image_size=image_size, train_transform=True)
    if name == "flowers102":
        transform = paper_transforms(image_size, train=True)
        val = load_paper_dataset(name, root, "val", image_size=image_size, transform=transform)
        return ConcatDataset([train, val])
    return train


def prepare_dataset(
    name: str, root: str | Path, download: bool = False, shifted_test: str | None = None
) -> dict:
    """Check (or download) dataset ``name`` under ``root``; return a manifest of what was found.

    With ``download=True`` torchvision's own download fetches every split that is missing (CIFAR-10.1 has
    no torchvision class, so its files must be placed by hand). Then every split is opened through the same
    code the stages use, and the manifest records the root, the expected files, the split sizes and the
    number of examples per class of the pool. Raises ``FileNotFoundError`` listing the expected paths and
    where to get them when something is missing.
    """
    _check_name(name)
    root = Path(root)
    if download:
        for split in SPLITS[name]:
            load_paper_dataset(name, root, split, image_size=32, download=True)
    splits = {
        split: len(load_paper_dataset(name, root, split, image_size=32, train_transform=False))
        for split in SPLITS[name]
    }
    pool_labels = labels_of(load_pool(name, root, image_size=32))
    manifest = {
        "dataset": name,
        "root": str(root.resolve()),
        "files": [str(p) for p in expected_files(name, root)],
        "splits": splits,
        "pool_size": int(pool_labels.size),
        "pool_class_counts": np.bincount(pool_labels, minlength=NUM_CLASSES[name]).tolist(),
        "num_classes": NUM_CLASSES[name],
        "metric": PAPER_METRIC[name],
    }
    if shifted_test == "cifar10.1":
        from bayes_transfer.data.cifar101 import CIFAR101

        shifted = CIFAR101(root / "cifar10.1")
        manifest["shifted_test"] = {"name": "cifar10.1", "root": str((root / "cifar10.1").resolve()),
                                    "size": len(shifted)}
    elif shifted_test is not None:
        raise ValueError(f"unknown shifted test set {shifted_test!r}; known: cifar10.1")
    return manifest
