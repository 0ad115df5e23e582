"""Tests for bayes_transfer.data.paper on tiny datasets written in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bayes_transfer.data import paper
from bayes_transfer.data.cifar101 import CIFAR101, load_cifar101
from bayes_transfer.data.imagenet import load_imagenet_train
from bayes_transfer.data.paper import NUM_CLASSES, PAPER_METRIC, load_paper_dataset
from bayes_transfer.data.splits import labels_of, split_train_val, subset
from bayes_transfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD, paper_transforms, simclr_augment
from bayes_transfer.data.subsample import balanced_subsample
from paper_files import (
    FLOWER_LABELS,
    presence_only_md5,
    write_cifar10,
    write_cifar100,
    write_cifar101,
    write_flowers102,
    write_oxford_pets,
)

pytest.importorskip("torchvision")
pytest.importorskip("scipy")

SIZE = 32  # small image_size keeps the transforms cheap


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def no_md5(monkeypatch):
    """torchvision's md5 checks test for presence only (tiny files never match the official sums)."""
    presence_only_md5(monkeypatch)


@pytest.fixture
def cifar10_root(tmp_path):
    """5 train batches of 10 images (labels 0..9 each) and a test batch of 20."""
    train_rows, test_rows = write_cifar10(tmp_path)
    return tmp_path, train_rows, test_rows


@pytest.fixture
def cifar100_root(tmp_path):
    """200 train images (2 per fine class) and 100 test images (1 per class)."""
    write_cifar100(tmp_path)
    return tmp_path


@pytest.fixture
def flowers_root(tmp_path):
    """30 images: train ids 1..12, val 13..18, test 19..30; labels 1..3 cycling."""
    write_flowers102(tmp_path)
    return tmp_path


@pytest.fixture
def pets_root(tmp_path):
    """4 images per breed for 3 breeds; numbers 1-2 in trainval.txt, 3-4 in test.txt."""
    write_oxford_pets(tmp_path)
    return tmp_path


@pytest.fixture
def cifar101_root(tmp_path):
    data, labels = write_cifar101(tmp_path)
    return tmp_path, data, labels


def _check_item(ds, size=SIZE):
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert x.shape == (3, size, size)
    assert isinstance(y, int)


# --------------------------------------------------------------------------- constants, transforms
def test_constants():
    assert set(PAPER_METRIC) == set(NUM_CLASSES) == set(paper.PAPER_DATASETS)
    assert PAPER_METRIC["cifar10"] == "accuracy"
    assert PAPER_METRIC["flowers102"] == "mean_per_class_accuracy"
    assert NUM_CLASSES == {"cifar10": 10, "cifar100": 100, "flowers102": 102, "oxford_pets": 37}


def test_paper_transforms():
    from PIL import Image
    from torchvision import transforms as T

    train = paper_transforms(224, train=True)
    test = paper_transforms(224, train=False)
    assert [type(t) for t in train.transforms] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    assert [type(t) for t in test.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert test.transforms[0].size == 256
    assert paper_transforms(SIZE, train=False).transforms[0].size == int(SIZE * 256 / 224)
    img = Image.fromarray(np.full((50, 70, 3), 128, dtype=np.uint8))
    assert train(img).shape == test(img).shape == (3, 224, 224)
    # grey 128/255 normalised with the ImageNet statistics
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(test(img)[:, 100, 100], expected, atol=1e-5)
    with pytest.raises(ValueError, match="image_size"):
        paper_transforms(0, train=True)


# --------------------------------------------------------------------------- each dataset
def test_cifar10(cifar10_root, no_md5):
    root, train_rows, test_rows = cifar10_root
    train = load_paper_dataset("cifar10", root, "train", image_size=SIZE)
    test = load_paper_dataset("cifar10", root, "test", image_size=SIZE)
    assert len(train) == 50 and len(test) == 20
    assert labels_of(train).tolist() == list(range(10)) * 5
    assert labels_of(test).tolist() == [i % 10 for i in range(20)]
    _check_item(train)
    _check_item(test)
    # the pixels survive the channel-major row format -> HWC -> PIL -> CHW round trip
    from torchvision.transforms import ToTensor

    raw = load_paper_dataset("cifar10", root, "train", transform=ToTensor())
    x, _ = raw[13]
    expected = torch.from_numpy(train_rows[13]).view(3, 32, 32)
    assert torch.equal((x * 255).round().to(torch.uint8), expected)
    # test split and train_transform=False use the deterministic transform
    assert torch.equal(test[3][0], test[3][0])
    plain = load_paper_dataset("cifar10", root, "train", image_size=SIZE, train_transform=False)
    assert torch.equal(plain[5][0], plain[5][0])
    with pytest.raises(ValueError, match="splits train, test"):
        load_paper_dataset("cifar10", root, "val")


def test_cifar100(cifar100_root, no_md5):
    train = load_paper_dataset("cifar100", cifar100_root, "train", image_size=SIZE)
    test = load_paper_dataset("cifar100", cifar100_root, "test", image_size=SIZE)
    assert len(train) == 200 and len(test) == 100
    assert labels_of(train).tolist() == [i % 100 for i in range(200)]
    assert labels_of(test).tolist() == list(range(100))
    _check_item(train)
    _check_item(test)


def test_flowers102(flowers_root, no_md5):
    splits = {
        s: load_paper_dataset("flowers102", flowers_root, s, image_size=SIZE)
        for s in ("train", "val", "test")
    }
    assert {s: len(d) for s, d in splits.items()} == {"train": 12, "val": 6, "test": 12}
    assert labels_of(splits["train"]).tolist() == (FLOWER_LABELS[:12] - 1).tolist()
    assert labels_of(splits["val"]).tolist() == (FLOWER_LABELS[12:18] - 1).tolist()
    assert labels_of(splits["test"]).tolist() == (FLOWER_LABELS[18:] - 1).tolist()
    for d in splits.values():
        _check_item(d)
    x, y = splits["test"][4]
    assert y == int(FLOWER_LABELS[18 + 4]) - 1


def test_oxford_pets(pets_root):
    train = load_paper_dataset("oxford_pets", pets_root, "train", image_size=SIZE)
    alias = load_paper_dataset("oxford_pets", pets_root, "trainval", image_size=SIZE)
    test = load_paper_dataset("oxford_pets", pets_root, "test", image_size=SIZE)
    assert len(train) == len(alias) == 6 and len(test) == 6
    assert labels_of(train).tolist() == [0, 0, 1, 1, 5, 5]  # class ids are 1-based on disk
    assert labels_of(test).tolist() == [0, 0, 1, 1, 5, 5]
    _check_item(train)
    _check_item(test)
    with pytest.raises(ValueError, match="splits train, test"):
        load_paper_dataset("oxford_pets", pets_root, "val")


def test_cifar101(cifar101_root):
    root, data, labels = cifar101_root
    raw = CIFAR101(root)
    assert len(raw) == 25 and raw.targets == labels.tolist()
    img, y = raw[7]
    assert np.array_equal(np.asarray(img), data[7]) and y == 7
    ds = load_cifar101(root, image_size=SIZE)
    _check_item(ds)
    assert labels_of(ds).tolist() == labels.tolist()


def test_cifar101_rejects_bad_arrays(tmp_path):
    np.save(tmp_path / "cifar10.1_v6_data.npy", np.zeros((4, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"cifar10\.1_v6_data\.npy.*\(N, 32, 32, 3\)"):
        CIFAR101(tmp_path)
    np.save(tmp_path / "cifar10.1_v6_data.npy", np.zeros((4, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"cifar10\.1_v6_labels\.npy.*4 labels"):
        CIFAR101(tmp_path)


# --------------------------------------------------------------------------- labels, subsets
@pytest.mark.parametrize("which", ["cifar10", "flowers102", "oxford_pets", "cifar101"])
def test_labels_without_decoding_and_balanced_subset(which, request, monkeypatch, no_md5):
    if which == "cifar10":
        root = request.getfixturevalue("cifar10_root")[0]
        ds = load_paper_dataset("cifar10", root, "train", image_size=SIZE)
    elif which == "flowers102":
        root = request.getfixturevalue("flowers_root")
        ds = load_paper_dataset("flowers102", root, "test", image_size=SIZE)
    elif which == "oxford_pets":
        root = request.getfixturevalue("pets_root")
        ds = load_paper_dataset("oxford_pets", root, "train", image_size=SIZE)
    else:
        ds = load_cifar101(request.getfixturevalue("cifar101_root")[0], image_size=SIZE)

    def no_decoding(self, index):
        raise AssertionError("labels_of must not load images")

    with monkeypatch.context() as m:
        m.setattr(type(ds), "__getitem__", no_decoding)
        labels = labels_of(ds)
    assert labels.dtype == np.int64 and labels.shape == (len(ds),)
    k = np.unique(labels).size
    n = 2 * k
    idx = balanced_subsample(labels, n, seed=3)
    sub = subset(ds, idx)
    assert len(sub) == n
    present = set(labels.tolist())
    expected = [2 if c in present else 0 for c in range(labels.max() + 1)]
    assert np.bincount(labels_of(sub)).tolist() == expected
    assert np.array_equal(labels_of(sub), labels[idx])
    x, y = sub[1]
    assert x.shape == (3, SIZE, SIZE) and y == labels[idx[1]]


def test_labels_of_fallbacks():
    from torch.utils.data import ConcatDataset, TensorDataset

    td = TensorDataset(torch.zeros(4, 2), torch.tensor([3, 1, 2, 1]))
    assert labels_of(td).tolist() == [3, 1, 2, 1]
    assert labels_of(ConcatDataset([td, td])).tolist() == [3, 1, 2, 1] * 2
    assert labels_of(subset(td, [2, 0])).tolist() == [2, 3]

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(1), i * 2

    assert labels_of(Plain()).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        subset(td, [0, 4])


def test_split_train_val_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, val = split_train_val(labels, 20, seed=5)
    assert val.size == 20 and train.size == 80
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val]).tolist() == [2, 4, 6, 8]
    again_train, again_val = split_train_val(labels, 20, seed=5)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, split_train_val(labels, 20, seed=6)[1])
    # exact shares 0.7, 1.4, 2.1, 2.8: floors 0, 1, 2, 2; the two largest remainders (classes
    # 3 and 0) get the remaining two examples
    _, val7 = split_train_val(labels, 7, seed=0)
    assert np.bincount(labels[val7], minlength=4).tolist() == [1, 1, 2, 3]
    with pytest.raises(ValueError, match="n_val"):
        split_train_val(labels, 100, seed=0)


# ------------------------------------------------------------------ missing / corrupt files
@pytest.mark.parametrize(
    "name, expected, source",
    [
        (
            "cifar10",
            ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta"],
            "cifar-10-python.tar.gz",
        ),
        (
            "cifar100",
            ["cifar-100-python/train", "cifar-100-python/meta"],
            "cifar-100-python.tar.gz",
        ),
        ("flowers102", ["flowers-102/jpg/", "flowers-102/setid.mat"], "102flowers.tgz"),
        (
            "oxford_pets",
            ["oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/test.txt"],
            "annotations.tar.gz",
        ),
    ],
)
def test_missing_files_error_lists_expected_paths(tmp_path, name, expected, source):
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as info:
        load_paper_dataset(name, root, "test")
    msg = str(info.value)
    for rel in expected:
        assert str(root / rel.rstrip("/")) in msg
    assert source in msg and "download=True" in msg and "MISSING" in msg


def test_partially_missing_files_marks_each(cifar10_root, no_md5):
    root = cifar10_root[0]
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 7") as info:
        load_paper_dataset("cifar10", root, "train")
    msg = str(info.value)
    assert f"MISSING {root / 'cifar-10-batches-py' / 'data_batch_3'}" in msg
    assert f"found   {root / 'cifar-10-batches-py' / 'data_batch_1'}" in msg


def test_cifar101_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CIFAR101(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "cifar10.1_v6_data.npy") in msg
    assert str(tmp_path / "cifar10.1_v6_labels.npy") in msg
    assert "modestyachts/CIFAR-10.1" in msg


def test_md5_mismatch_is_reported(cifar10_root):
    # Without the no_md5 fixture torchvision checks md5 sums; the tiny files fail it.
    with pytest.raises(RuntimeError, match=r"(?s)'cifar10'.*md5.*data_batch_1"):
        load_paper_dataset("cifar10", cifar10_root[0], "train")


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_paper_dataset("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match="splits train, val, test"):
        load_paper_dataset("flowers102", tmp_path, "trainval")


# ------------------------------------------------------------ the paper config's code path
def _paper_data_cfg(name, root, shifted=None):
    """The ``data`` section of configs/paper.yaml (and its sweep experiments), at a small resolution."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs" / "paper.yaml").read_text())
    data = dict(cfg["data"])
    data.update(cfg["sweep"]["experiments"].get(f"{name}_resnet50", {}).get("data", {}))
    assert data["dataset"] == name
    assert data["shifted_test"] == shifted
    return data | {"root": str(root), "image_size": SIZE}


@pytest.mark.parametrize(
    "name, writer, pool, test, classes, metric",
    [
        ("cifar10", write_cifar10, 50, 20, 10, "accuracy"),
        ("cifar100", write_cifar100, 200, 100, 100, "accuracy"),
        ("flowers102", write_flowers102, 18, 12, 102, "mean_per_class_accuracy"),  # pool = train + val
        ("oxford_pets", write_oxford_pets, 6, 6, 37, "mean_per_class_accuracy"),
    ],
)
def test_load_task_of_the_paper_config(tmp_path, no_md5, name, writer, pool, test, classes, metric):
    from bayes_transfer.stages.task import holdout_split, load_task, training_subset

    writer(tmp_path)
    shifted = "cifar10.1" if name == "cifar10" else None
    if shifted:
        write_cifar101(tmp_path / "cifar10.1")
    task = load_task(_paper_data_cfg(name, tmp_path, shifted))
    assert (len(task.pool), len(task.test), task.num_classes, task.metric) == (pool, test, classes, metric)
    assert set(task.eval_sets()) == ({"test", "shifted_test"} if shifted else {"test"})
    if shifted:
        assert len(task.shifted_test) == 25
    sub = training_subset(task, 6, seed=0)
    train, val = holdout_split(task, sub, 0.3, seed=0)
    assert len(train) + len(val) == 6
    x, y = train[0]
    assert x.shape == (3, SIZE, SIZE) and 0 <= y < classes


def test_flowers_pool_is_train_plus_val(flowers_root, no_md5):
    pool = paper.load_pool("flowers102", flowers_root, image_size=SIZE)
    assert labels_of(pool).tolist() == (FLOWER_LABELS[:18] - 1).tolist()
    _check_item(pool)


def test_prepare_dataset_manifest(cifar10_root, no_md5):
    root = cifar10_root[0]
    write_cifar101(root / "cifar10.1")
    manifest = paper.prepare_dataset("cifar10", root, shifted_test="cifar10.1")
    assert manifest["splits"] == {"train": 50, "test": 20}
    assert manifest["pool_size"] == 50 and manifest["pool_class_counts"] == [5] * 10
    assert manifest["shifted_test"]["size"] == 25
    assert manifest["files"][0].endswith("cifar-10-batches-py/data_batch_1")
    (root / "cifar10.1" / "cifar10.1_v6_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar10\.1_v6_labels\.npy.*modestyachts"):
        paper.prepare_dataset("cifar10", root, shifted_test="cifar10.1")


def test_prepare_dataset_download_uses_torchvision(tmp_path, monkeypatch):
    calls = []
    import torchvision.datasets as tvd

    def fake_download(self):
        calls.append(type(self).__name__)
        write_oxford_pets(Path(self.root))

    monkeypatch.setattr(tvd.OxfordIIITPet, "_download", fake_download)
    manifest = paper.prepare_dataset("oxford_pets", tmp_path, download=True)
    assert calls and set(calls) == {"OxfordIIITPet"}
    assert manifest["splits"] == {"train": 6, "test": 6}


def test_imagenet_train_and_missing(tmp_path):
    from paper_files import write_imagenet_train

    with pytest.raises(FileNotFoundError, match=r"(?s)imagenet/train.*image-net.org.*priorbox"):
        load_imagenet_train(tmp_path, image_size=SIZE)
    write_imagenet_train(tmp_path, classes=3, per_class=2)
    ds = load_imagenet_train(tmp_path, image_size=SIZE)
    assert len(ds) == 6 and labels_of(ds).tolist() == [0, 0, 1, 1, 2, 2]
    _check_item(ds)


def test_simclr_augment_is_seeded_and_keeps_shape():
    x = torch.randn(4, 3, SIZE, SIZE)
    a = simclr_augment(x, torch.Generator().manual_seed(0))
    b = simclr_augment(x, torch.Generator().manual_seed(0))
    c = simclr_augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # views are valid images: after un-normalising, pixels lie in [0, 1]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = a * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
