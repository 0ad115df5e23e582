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

The datasets without an official validation split (CIFAR, Pets) get one from
:func:`split_train_val` (stratified, seeded) applied to :func:`labels_of` of the train split;
a class-balanced training subset of size ``n`` comes from
:func:`bayes_transfer.data.subsample.balanced_subsample` on the same labels, and
:func:`subset` wraps the chosen indices.

The shifted test set of CIFAR-10 is CIFAR-10.1 v6 (:class:`CIFAR101`), read from the two
``.npy`` files of its official release.

Before a torchvision class is constructed the files it needs are checked; when some are
missing (and ``download`` is False) a ``FileNotFoundError`` lists every expected path and
where to get the data. Nothing is downloaded unless ``download=True`` is passed, which is
handed to torchvision's own download.

Transforms follow the paper's (standard ImageNet fine-tuning) recipe, see
:func:`paper_transforms`. Images are 3-channel RGB PIL images before the transform.

The protocol's view of a dataset: :func:`load_pool` (the downstream training pool; Flowers-102's is train +
val), :func:`prepare_dataset` (the workflow's data check / download, returning a manifest),
:func:`load_imagenet_train` (the source task of SWAG at paper scale, an ImageFolder) and
:func:`simclr_augment` (the two-view augmentation of the SimCLR source loss on image batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from .subsample import label_array

__all__ = [
    "PAPER_DATASETS",
    "PAPER_METRIC",
    "NUM_CLASSES",
    "SPLITS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_CLASSES",
    "paper_transforms",
    "expected_files",
    "load_paper_dataset",
    "CIFAR101",
    "load_cifar101",
    "labels_of",
    "subset",
    "split_train_val",
    "load_pool",
    "prepare_dataset",
    "load_imagenet_train",
    "simclr_augment",
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


# --------------------------------------------------------------------------- transforms
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


def _require_files(
    paths: Sequence[tuple[str, bool]], what: str, root: Path, source: str, hint: str
) -> None:
    """Raise ``FileNotFoundError`` listing all expected ``(path, present)`` if any is missing."""
    missing = [p for p, ok in paths if not ok]
    if not missing:
        return
    lines = "\n".join(f"  {'found  ' if ok else 'MISSING'} {p}" for p, ok in paths)
    raise FileNotFoundError(
        f"{what}: {len(missing)} of {len(paths)} expected path(s) missing under root "
        f"{str(root)!r}:\n{lines}\nTo obtain them: {source}.{hint}"
    )


def _check_dataset_files(name: str, root: Path) -> None:
    checks = [
        (str(root / rel) + ("/" if rel.endswith("/") else ""), _present(root / rel, rel))
        for rel in _LAYOUT[name]
    ]
    _require_files(
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
    path and where to get the data; a failed torchvision integrity (md5) check is re-raised as
    a ``RuntimeError`` naming the dataset and root.
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
    except RuntimeError as exc:
        listing = "\n".join(
            f"  {'found  ' if _present(p, rel) else 'MISSING'} {p}"
            for p, rel in zip(expected_files(name, root), _LAYOUT[name])
        )
        raise RuntimeError(
            f"torchvision could not load dataset {name!r} (split {split!r}) from root "
            f"{str(root)!r}: {exc}\nFiles that are present but fail torchvision's integrity "
            "check (for CIFAR and Flowers-102 it compares md5 checksums with the official "
            "release) are probably truncated or not the official files. Expected paths:\n"
            f"{listing}\nRe-obtain them from {_SOURCE[name]}."
        ) from exc


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
        _require_files(
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


# --------------------------------------------------------------------------- labels, splits
def _as_label_array(values: Any, where: str) -> np.ndarray:
    return label_array(values, where, allow_whole_floats=True)


def labels_of(dataset: Dataset) -> np.ndarray:
    """Integer labels (int64 numpy array, dataset order) without decoding any image.

    Uses ``.targets`` (CIFAR, :class:`CIFAR101`, ImageFolder), ``._labels`` (Flowers102,
    OxfordIIITPet), the second tensor of a ``TensorDataset``, and recurses through ``Subset``
    and ``ConcatDataset``. Any other dataset is iterated (``dataset[i][1]``), which does load
    every item.
    """
    if isinstance(dataset, Subset):
        idx = np.asarray(dataset.indices, dtype=np.int64)
        return labels_of(dataset.dataset)[idx]
    if isinstance(dataset, ConcatDataset):
        parts = [labels_of(d) for d in dataset.datasets]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    where = type(dataset).__name__
    for attr in ("targets", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return _as_label_array(values, f"{where}.{attr}")
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return _as_label_array(dataset.tensors[1], f"{where}.tensors[1]")
    return _as_label_array([int(dataset[i][1]) for i in range(len(dataset))], where)


def subset(dataset: Dataset, indices: Any) -> Subset:
    """``torch.utils.data.Subset`` of ``dataset`` at ``indices`` (checked to be in range)."""
    idx = np.asarray(indices.detach().cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D sequence of ints, got shape {idx.shape}")
    n = len(dataset)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(
            f"indices must lie in [0, {n}) for a dataset of length {n}, got range "
            f"{idx.min()}..{idx.max()}"
        )
    return Subset(dataset, idx.astype(np.int64).tolist())


def split_train_val(labels: Any, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of ``range(len(labels))`` into ``(train_idx, val_idx)``.

    Each class contributes to the validation set in proportion to its size (floor of
    ``n_val * count / N``; the remaining examples go to the classes with the largest
    remainders, ties to the lower class). Which examples of a class are taken comes from
    ``np.random.default_rng(seed)``. Both index arrays are sorted int64 and together cover
    every index exactly once.
    """
    y = _as_label_array(labels, "split_train_val")
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 1:
        raise ValueError(f"n_val must be a positive int, got {n_val!r}")
    if n_val >= y.size:
        raise ValueError(
            f"n_val={n_val} must be smaller than the number of examples ({y.size}) so that "
            "the training split is not empty"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    classes, counts = np.unique(y, return_counts=True)
    exact = n_val * counts / y.size
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n_val - int(quota.sum())]] += 1
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    )
    val = np.sort(val).astype(np.int64)
    train = np.setdiff1d(np.arange(y.size, dtype=np.int64), val)
    return train, val


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
        shifted = CIFAR101(root / "cifar10.1")
        manifest["shifted_test"] = {"name": "cifar10.1", "root": str((root / "cifar10.1").resolve()),
                                    "size": len(shifted)}
    elif shifted_test is not None:
        raise ValueError(f"unknown shifted test set {shifted_test!r}; known: cifar10.1")
    return manifest


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
    _require_files([(str(folder) + "/", bool(classes))], "ImageNet training set not found", Path(root),
                   _IMAGENET_SOURCE, " Or import the authors' released priors instead (prior.source: priorbox).")
    return ImageFolder(str(folder), transform=paper_transforms(image_size, train=True))


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
