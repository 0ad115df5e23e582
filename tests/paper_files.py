"""Tiny datasets and checkpoints written in the real on-disk formats of the paper-scale inputs.

Shared by the tests of the loaders (test_paper_data.py), of the paper-scale stages (test_paper_stages.py) and
of the workflow on them. Every writer returns what it wrote so tests can compare against known answers.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from bayes_transfer.data.cifar101 import CIFAR10_CLASSES


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` images in CIFAR's row format: uint8 (n, 3072), channel-major (R plane, G, B)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 10, n_test: int = 20, seed: int = 0):
    """``cifar-10-batches-py/``: 5 train batches of ``per_batch`` images (labels cycling 0..9) and a test batch.

    Returns (train rows, test rows)."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-10-batches-py"
    train_rows = []
    for b in range(1, 6):
        rows = cifar_rows(rng, per_batch)
        train_rows.append(rows)
        _pickle(base / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5",
            "labels": [i % 10 for i in range(per_batch)],
            "data": rows,
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        })
    test_rows = cifar_rows(rng, n_test)
    _pickle(base / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": [i % 10 for i in range(n_test)],
        "data": test_rows,
        "filenames": [f"test_{i}.png" for i in range(n_test)],
    })
    _pickle(base / "batches.meta",
            {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072})
    return np.concatenate(train_rows), test_rows


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 1) -> None:
    """``cifar-100-python/``: fine labels cycling 0..99."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        _pickle(base / split, {
            "filenames": [f"{split}_{i}.png" for i in range(n)],
            "batch_label": f"{split} batch",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": cifar_rows(rng, n),
        })
    _pickle(base / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse_{i}" for i in range(20)]})


def write_jpg(path: Path, rng: np.random.Generator, h: int = 30, w: int = 40) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, "JPEG")


#: Flowers-102 labels of the 30 images written by write_flowers102 (1-based on disk, 3 classes)
FLOWER_LABELS = np.array([(i % 3) + 1 for i in range(30)], dtype=np.uint8)


def write_flowers102(root: Path, seed: int = 2) -> None:
    """``flowers-102/``: 30 jpgs, imagelabels.mat, setid.mat (train ids 1..12, val 13..18, test 19..30)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    base = Path(root) / "flowers-102"
    for i in range(1, 31):
        write_jpg(base / "jpg" / f"image_{i:05d}.jpg", rng)
    savemat(base / "imagelabels.mat", {"labels": FLOWER_LABELS[None, :]})
    savemat(base / "setid.mat", {
        "trnid": np.arange(1, 13, dtype=np.uint16)[None, :],
        "valid": np.arange(13, 19, dtype=np.uint16)[None, :],
        "tstid": np.arange(19, 31, dtype=np.uint16)[None, :],
    })


#: (image name stem, class id, species 1=cat 2=dog, breed id): the real annotation columns
PET_BREEDS = [("Abyssinian", 1, 1, 1), ("american_bulldog", 2, 2, 1), ("Bengal", 6, 1, 3)]


def write_oxford_pets(root: Path, seed: int = 3) -> None:
    """``oxford-iiit-pet/``: 4 images per breed of PET_BREEDS; numbers 1-2 in trainval.txt, 3-4 in test.txt."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for stem, cls, species, breed in PET_BREEDS:
        for k in range(1, 5):
            write_jpg(base / "images" / f"{stem}_{k}.jpg", rng)
            lines["trainval" if k <= 2 else "test"].append(f"{stem}_{k} {cls} {species} {breed}")
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def write_cifar101(folder: Path, n: int = 25, seed: int = 4):
    """``cifar10.1_v6_data.npy`` (uint8 (n, 32, 32, 3)) and ``cifar10.1_v6_labels.npy`` in ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.array([i % 10 for i in range(n)], dtype=np.int64)
    np.save(folder / "cifar10.1_v6_data.npy", data)
    np.save(folder / "cifar10.1_v6_labels.npy", labels)
    return data, labels


def write_imagenet_train(root: Path, classes: int = 3, per_class: int = 4, seed: int = 5) -> None:
    """``imagenet/train/<wnid>/*.JPEG``: the extracted ImageNet training layout, tiny."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        for i in range(per_class):
            write_jpg(Path(root) / "imagenet" / "train" / f"n{c:08d}" / f"n{c:08d}_{i}.JPEG", rng, 24, 24)


def presence_only_md5(monkeypatch) -> None:
    """Make torchvision's md5 checks of CIFAR and Flowers-102 test for presence only.

    Tiny test files can never match the official checksums; both classes call the module-level
    ``check_integrity`` of their module, so patching that name keeps the real code path minus the md5.
    """
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.flowers102 as tv_flowers

    def present(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", present)
    monkeypatch.setattr(tv_flowers, "check_integrity", present)
