"""The Fashion-MNIST loader (bayes_transfer.data.fashion_mnist) on small idx files written here in the real format
(magic number, big-endian uint32 dimensions, unsigned-byte data; gzipped and not), and on the real files when
Debian's dataset-fashion-mnist package is installed."""

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bayes_transfer.data import fashion_mnist as fm

PER_CLASS_TRAIN, PER_CLASS_TEST = 12, 4


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: 0, 0, 0x08 (unsigned byte), ndim, then each dim big-endian."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random images and shuffled labels, PER_CLASS_* images of every class 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per in (("train", PER_CLASS_TRAIN), ("test", PER_CLASS_TEST)):
        labels = rng.permutation(np.repeat(np.arange(10), per)).astype(np.uint8)
        out[f"{split}_images"] = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
        out[f"{split}_labels"] = labels
    return out


def write_dataset(directory: Path, arrays: dict, gz: bool = True) -> dict[str, Path]:
    return {key: write_idx(directory / fm.FILES[key], idx_bytes(arrays[key]), gz) for key in fm.FILES}


@pytest.fixture
def flat(tmp_path):
    arrays = make_arrays()
    write_dataset(tmp_path / "flat", arrays, gz=True)
    return tmp_path / "flat", arrays


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip_of_pixels_and_labels(tmp_path, gz):
    arrays = make_arrays(seed=1)
    paths = write_dataset(tmp_path, arrays, gz=gz)
    files = fm.read_fashion_mnist(directory=tmp_path)
    for key in fm.FILES:
        got = getattr(files, key)
        assert np.array_equal(got, arrays[key]), key
        assert files.paths[key] == str(paths[key].resolve())
    assert files.train_images.dtype == np.uint8 and files.train_labels.dtype == np.int64


def test_torchvision_layout_under_root_with_both_raw_and_gz(tmp_path):
    """torchvision's download leaves both the .gz and the extracted file in <root>/FashionMNIST/raw/."""
    arrays = make_arrays(seed=2)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_dataset(raw, arrays, gz=True)
    write_dataset(raw, arrays, gz=False)
    found = fm.locate_files(root=tmp_path)
    assert found["train_images"] == raw / "train-images-idx3-ubyte"  # uncompressed preferred
    data = fm.fashion_mnist_from_config({"dataset": "fashion_mnist", "root": str(tmp_path), "n_val": 10})
    assert data.files["test_labels"] == str((raw / "t10k-labels-idx1-ubyte").resolve())
    assert len(data.test) == 5 * PER_CLASS_TEST


def test_class_split_relabelling_sizes_and_standardisation(flat):
    directory, arrays = flat
    d = fm.load_fashion_mnist_tasks(directory=directory, split_seed=0, n_val=10)
    ty, sy = arrays["train_labels"].astype(np.int64), arrays["test_labels"].astype(np.int64)
    assert (d.num_classes, d.source_classes) == (5, 5)
    # source: classes 0-4 of the train file (all of them) and of the t10k file, labels unchanged
    assert np.array_equal(d.source_train_indices, np.flatnonzero(ty < 5))
    assert np.array_equal(d.source_train.tensors[1].numpy(), ty[ty < 5])
    assert np.array_equal(d.source_test.tensors[1].numpy(), sy[sy < 5])
    # downstream: classes 5-9 relabelled 0-4; val and pool partition the train file's 5-9 images
    assert len(d.val) == 10 and len(d.pool) == 5 * PER_CLASS_TRAIN - 10
    assert np.intersect1d(d.val_indices, d.pool_indices).size == 0
    assert np.array_equal(np.sort(np.concatenate([d.val_indices, d.pool_indices])), np.flatnonzero(ty >= 5))
    assert np.array_equal(d.pool.tensors[1].numpy(), ty[d.pool_indices] - 5)
    assert np.bincount(d.val.tensors[1].numpy(), minlength=5).tolist() == [2] * 5  # class-balanced
    assert np.array_equal(d.test_indices, np.flatnonzero(sy >= 5))
    assert np.array_equal(d.test.tensors[1].numpy(), sy[sy >= 5] - 5)
    assert set(d.test.tensors[1].tolist()) == set(range(5))
    # pixels: x / 255, standardised with the source-train mean and std
    unit = arrays["train_images"][ty < 5].astype(np.float64) / 255
    # float32 pixels: agreement to float32 rounding
    assert d.mean == pytest.approx(unit.mean(), rel=1e-6) and d.std == pytest.approx(unit.std(), rel=1e-6)
    for ds, images, idx in ((d.source_train, arrays["train_images"], d.source_train_indices),
                            (d.pool, arrays["train_images"], d.pool_indices),
                            (d.test, arrays["test_images"], d.test_indices)):
        x = ds.tensors[0]
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (1, 28, 28)
        back = x.numpy()[:, 0].astype(np.float64) * d.std + d.mean
        assert np.allclose(back, images[idx] / 255, atol=1e-6)
    assert abs(float(d.source_train.tensors[0].double().mean())) < 1e-6


def test_validation_split_is_seeded(flat):
    directory, _ = flat
    a = fm.load_fashion_mnist_tasks(directory=directory, split_seed=3, n_val=10)
    b = fm.load_fashion_mnist_tasks(directory=directory, split_seed=3, n_val=10)
    c = fm.load_fashion_mnist_tasks(directory=directory, split_seed=4, n_val=10)
    assert np.array_equal(a.val_indices, b.val_indices) and torch.equal(a.pool.tensors[0], b.pool.tensors[0])
    assert not np.array_equal(a.val_indices, c.val_indices)
    none = fm.load_fashion_mnist_tasks(directory=directory, n_val=0)
    assert len(none.val) == 0 and len(none.pool) == 5 * PER_CLASS_TRAIN
    with pytest.raises(ValueError, match="n_val=60 must leave a non-empty training pool"):
        fm.load_fashion_mnist_tasks(directory=directory, n_val=60)


def test_shifted_test_set_is_fixed_by_its_seed(flat):
    directory, _ = flat
    a = fm.load_fashion_mnist_tasks(directory=directory, n_val=10, split_seed=0)
    b = fm.load_fashion_mnist_tasks(directory=directory, n_val=10, split_seed=5)  # split seed does not matter
    assert torch.equal(a.shifted_test.tensors[0], b.shifted_test.tensors[0])
    assert torch.equal(a.shifted_test.tensors[1], a.test.tensors[1])
    x, s = a.test.tensors[0], a.shifted_test.tensors[0]
    assert s.shape == x.shape and (s - x).abs().mean() > 0.1
    unit = s * a.std + a.mean
    assert unit.min() >= -1e-6 and unit.max() <= 1 + 1e-6  # clamped to [0, 1] before standardising
    zero = fm.load_fashion_mnist_tasks(directory=directory, n_val=10, shift_strength=0.0)
    assert torch.equal(zero.shifted_test.tensors[0], zero.test.tensors[0])
    half = fm.load_fashion_mnist_tasks(directory=directory, n_val=10, shift_strength=0.5)
    assert 0 < (half.shifted_test.tensors[0] - x).abs().mean() < (s - x).abs().mean()


def test_14_pixel_images_are_2x2_averages(flat):
    directory, arrays = flat
    d = fm.load_fashion_mnist_tasks(directory=directory, n_val=10, image_size=14)
    x = d.test.tensors[0]
    assert tuple(x.shape[1:]) == (1, 14, 14) and d.image_size == 14
    unit = arrays["test_images"][d.test_indices].astype(np.float64) / 255
    pooled = unit.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))
    assert np.allclose(x.numpy()[:, 0] * d.std + d.mean, pooled, atol=1e-6)
    assert tuple(d.shifted_test.tensors[0].shape[1:]) == (1, 14, 14)
    with pytest.raises(ValueError, match="image_size must be one of"):
        fm.load_fashion_mnist_tasks(directory=directory, image_size=32)


# ------------------------------------------------------------------------------------------------- errors
def test_missing_files_list_every_expected_path_and_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        fm.load_fashion_mnist_tasks(root=tmp_path / "data")
    msg = str(err.value)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    for name in fm.FILES.values():
        assert str(raw / name) in msg and str(raw / f"{name}.gz") in msg
    assert "download=True" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "data.fashion_mnist_dir: /usr/share/datasets/fashion-mnist" in msg
    # one file missing in a flat directory: that one is named missing, the others found
    arrays = make_arrays()
    paths = write_dataset(tmp_path / "flat", arrays)
    paths["test_labels"].unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 4 idx files missing") as err:
        fm.read_fashion_mnist(directory=tmp_path / "flat")
    msg = str(err.value)
    assert f"{tmp_path / 'flat' / 't10k-labels-idx1-ubyte.gz'}   [MISSING]" in msg
    assert f"[found: {paths['train_images']}]" in msg


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_is_named(tmp_path, gz):
    arrays = make_arrays()
    write_dataset(tmp_path, arrays, gz=gz)
    name = fm.FILES["train_images"]
    bad = write_idx(tmp_path / name, idx_bytes(arrays["train_images"])[:-100], gz)
    with pytest.raises(ValueError, match="truncated") as err:
        fm.read_fashion_mnist(directory=tmp_path)
    assert str(bad.resolve()) in str(err.value) and "120 images" in str(err.value)


def test_wrong_magic_number_is_named(tmp_path):
    arrays = make_arrays()
    write_dataset(tmp_path, arrays)
    # a label file where an image file belongs (magic 2049 instead of 2051)
    bad = write_idx(tmp_path / fm.FILES["test_images"], idx_bytes(arrays["test_labels"]), gz=True)
    with pytest.raises(ValueError, match=r"magic number 2049 \(0x00000801\); expected 2051") as err:
        fm.read_fashion_mnist(directory=tmp_path)
    assert str(bad.resolve()) in str(err.value)


def test_labels_out_of_range_are_named(tmp_path):
    arrays = make_arrays()
    labels = arrays["train_labels"].copy()
    labels[7] = 10
    arrays["train_labels"] = labels
    paths = write_dataset(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"1 label out of range \(e.g. 10 at position 7\); expected labels 0..9") \
            as err:
        fm.read_fashion_mnist(directory=tmp_path)
    assert str(paths["train_labels"].resolve()) in str(err.value)


def test_other_format_errors_name_the_file(tmp_path):
    arrays = make_arrays()
    paths = write_dataset(tmp_path, arrays)
    # wrong image size
    write_idx(tmp_path / fm.FILES["test_images"], idx_bytes(np.zeros((40, 32, 32), np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: images of 32 x 32 pixels; expected 28 x 28"):
        fm.read_fashion_mnist(directory=tmp_path)
    # as many labels as images
    write_idx(tmp_path / fm.FILES["test_images"], idx_bytes(arrays["test_images"][:-1]), gz=True)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz holds 39 images but .*t10k-labels-idx1-ubyte.gz "
                                         r"holds 40 labels"):
        fm.read_fashion_mnist(directory=tmp_path)
    # trailing bytes
    write_idx(tmp_path / fm.FILES["test_images"], idx_bytes(arrays["test_images"]) + b"\0", gz=True)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: 1 bytes after the"):
        fm.read_fashion_mnist(directory=tmp_path)
    # not gzip at all
    paths["test_images"].write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        fm.read_fashion_mnist(directory=tmp_path)


def test_augment_is_seeded_and_changes_the_images(flat):
    directory, _ = flat
    x = fm.load_fashion_mnist_tasks(directory=directory, n_val=10).test.tensors[0]
    a = fm.augment(x, torch.Generator().manual_seed(0))
    b = fm.augment(x, torch.Generator().manual_seed(0))
    c = fm.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    assert torch.allclose(fm.augment(x, torch.Generator(), strength=0.0, noise_std=0.0), x, atol=1e-5)
    with pytest.raises(ValueError, match="floating-point tensor"):
        fm.augment(x[0], torch.Generator())


# ------------------------------------------------------------------------------------------------- the real files
@pytest.mark.skipif(not fm.DEBIAN_DIR.is_dir(),
                    reason=f"{fm.DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_files_from_the_debian_package(tmp_path):
    files = fm.read_fashion_mnist(directory=fm.DEBIAN_DIR)
    assert files.train_images.shape == (60_000, 28, 28) and files.test_images.shape == (10_000, 28, 28)
    assert np.bincount(files.train_labels).tolist() == [6_000] * 10
    assert np.bincount(files.test_labels).tolist() == [1_000] * 10
    d = fm.fashion_mnist_from_config({"fashion_mnist_dir": str(fm.DEBIAN_DIR), "image_size": 14})
    assert (len(d.source_train), len(d.source_test), len(d.val), len(d.pool), len(d.test), len(d.shifted_test)) == \
        (30_000, 5_000, 1_000, 29_000, 5_000, 5_000)
    assert np.bincount(d.pool.tensors[1].numpy()).tolist() == [5_800] * 5
    # the same files in torchvision's layout (uncompressed copies) give the same arrays
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in fm.FILES.values():
        with gzip.open(fm.DEBIAN_DIR / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    again = fm.read_fashion_mnist(root=tmp_path)
    assert np.array_equal(again.train_images, files.train_images)
    assert np.array_equal(again.test_labels, files.test_labels)
