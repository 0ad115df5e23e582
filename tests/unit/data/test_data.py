"""Tests for bayes_transfer.data (balanced subsampling and the embedded digits tasks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_transfer.data import digits as digits_module
from bayes_transfer.data.digits import augment, load_digits_tasks, train_plus_val, train_subset
from bayes_transfer.data.subsample import balanced_subsample

LABELS = np.repeat(np.arange(5), 20)  # 5 classes x 20 examples


# --------------------------------------------------------------------------- subsampling
def test_balanced_subsample_counts_and_sorted():
    idx = balanced_subsample(LABELS, 23, seed=0)
    assert idx.shape == (23,) and idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, distinct
    counts = np.bincount(LABELS[idx], minlength=5)
    assert sorted(counts.tolist()) == [4, 4, 5, 5, 5]


def test_balanced_subsample_exact_multiple_and_whole_pool():
    assert np.bincount(LABELS[balanced_subsample(LABELS, 15, seed=1)]).tolist() == [3] * 5
    assert np.array_equal(balanced_subsample(LABELS, 100, seed=2), np.arange(100))


def test_balanced_subsample_deterministic_per_seed():
    a = balanced_subsample(LABELS, 12, seed=7)
    b = balanced_subsample(torch.from_numpy(LABELS), 12, seed=7)
    assert np.array_equal(a, b)
    others = [balanced_subsample(LABELS, 12, seed=s) for s in range(8, 12)]
    assert any(not np.array_equal(a, o) for o in others)


def test_balanced_subsample_fewer_than_classes():
    idx = balanced_subsample(LABELS, 3, seed=0)
    classes = LABELS[idx]
    assert len(idx) == 3 and len(set(classes.tolist())) == 3
    picked = {
        tuple(sorted(LABELS[balanced_subsample(LABELS, 3, seed=s)].tolist())) for s in range(20)
    }
    assert len(picked) > 1  # the classes themselves are chosen at random


@pytest.mark.parametrize("n", [0, -3])
def test_balanced_subsample_rejects_non_positive_n(n):
    with pytest.raises(ValueError, match="n must be positive"):
        balanced_subsample(LABELS, n, seed=0)


def test_balanced_subsample_rejects_n_larger_than_pool():
    with pytest.raises(ValueError, match=r"n=101 .*pool of 100"):
        balanced_subsample(LABELS, 101, seed=0)


def test_balanced_subsample_rejects_too_small_class():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 1)
    with pytest.raises(ValueError, match=r"class 2 has only 1 example"):
        balanced_subsample(labels, 9, seed=0)


# --------------------------------------------------------------------------- digits tasks
@pytest.fixture(scope="module")
def data():
    return load_digits_tasks()


def test_digits_split_sizes_and_shapes(data):
    assert data.num_classes == 5
    assert len(data.source_train) == 766 and len(data.source_test) == 135
    assert len(data.test) == 300 and len(data.val) == 150 and len(data.pool) == 446
    assert len(data.shifted_test) == 300
    splits = (data.source_train, data.source_test, data.pool, data.val, data.test)
    for ds in splits + (data.shifted_test,):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64
        assert y.min() == 0 and y.max() == 4
        assert torch.unique(y).tolist() == [0, 1, 2, 3, 4]


def test_digits_standardised_on_source_train(data):
    x = data.source_train.tensors[0]
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std(unbiased=False).item() - 1.0) < 1e-4
    assert data.mean == pytest.approx(0.3049, abs=1e-3)


def test_digits_splits_disjoint_and_complete(data):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    pool, val, test = set(data.pool_indices), set(data.val_indices), set(data.test_indices)
    assert not (pool & val) and not (pool & test) and not (val & test)
    assert pool | val | test == set(np.flatnonzero(targets >= 5).tolist())
    src_train, src_test = set(data.source_train_indices), set(data.source_test_indices)
    assert not (src_train & src_test)
    assert src_train | src_test == set(np.flatnonzero(targets < 5).tolist())
    # Labels of each split are the relabelled original digits.
    assert np.array_equal(data.test.tensors[1].numpy(), targets[data.test_indices] - 5)
    assert np.array_equal(data.source_test.tensors[1].numpy(), targets[data.source_test_indices])


def test_digits_split_stratified(data):
    counts = torch.bincount(data.test.tensors[1]).tolist()
    assert max(counts) - min(counts) <= 3
    counts = torch.bincount(data.val.tensors[1]).tolist()
    assert max(counts) - min(counts) <= 2


def test_digits_deterministic_and_split_seed(data):
    digits_module._build.cache_clear()
    again = load_digits_tasks()
    assert np.array_equal(again.test_indices, data.test_indices)
    assert torch.equal(again.pool.tensors[0], data.pool.tensors[0])
    other = load_digits_tasks(split_seed=1)
    assert not np.array_equal(other.test_indices, data.test_indices)
    assert np.array_equal(other.source_train_indices, data.source_train_indices)
    assert other.mean == data.mean


def test_digits_returns_fresh_tensors(data):
    first = load_digits_tasks()
    first.pool.tensors[0].zero_()
    first.shifted_test.tensors[0].zero_()
    second = load_digits_tasks()
    assert torch.equal(second.pool.tensors[0], data.pool.tensors[0])
    assert torch.equal(second.shifted_test.tensors[0], data.shifted_test.tensors[0])


def test_shifted_test_deterministic_differs_and_keeps_labels(data):
    digits_module._build.cache_clear()
    again = load_digits_tasks()
    assert torch.equal(again.shifted_test.tensors[0], data.shifted_test.tensors[0])
    assert torch.equal(data.shifted_test.tensors[1], data.test.tensors[1])
    diff = (data.shifted_test.tensors[0] - data.test.tensors[0]).abs().mean(dim=(1, 2, 3))
    assert bool((diff > 0.05).all())
    unshifted = load_digits_tasks(shift_strength=0.0)
    assert torch.allclose(unshifted.shifted_test.tensors[0], unshifted.test.tensors[0])


def test_load_digits_tasks_errors():
    with pytest.raises(ValueError, match="n_test"):
        load_digits_tasks(n_test=0)
    with pytest.raises(ValueError, match="non-empty training pool"):
        load_digits_tasks(n_test=800, n_val=96)
    with pytest.raises(ValueError, match="shift_strength"):
        load_digits_tasks(shift_strength=-1.0)


def test_augment_deterministic_under_seeded_generator(data):
    x = data.pool.tensors[0][:16]
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, x)
    gen = torch.Generator().manual_seed(5)
    view1, view2 = augment(x, gen), augment(x, gen)
    assert not torch.equal(view1, view2)  # the generator advances: two different views
    with pytest.raises(ValueError, match="x must be"):
        augment(x[0], torch.Generator())


def test_train_subset_and_train_plus_val(data):
    sub = train_subset(data, 20, seed=3)
    x, y = sub.tensors
    assert x.shape == (20, 1, 8, 8)
    assert torch.bincount(y).tolist() == [4] * 5
    assert torch.equal(train_subset(data, 20, seed=3).tensors[0], x)
    both = train_plus_val(data, 20, seed=3)
    assert len(both) == 170
    assert torch.equal(both.tensors[0][:20], x)
    assert torch.equal(both.tensors[1][20:], data.val.tensors[1])
    with pytest.raises(ValueError, match="n=447"):
        train_subset(data, 447, seed=0)


def test_raw_digits_equal_sklearn_load_digits():
    from sklearn.datasets import load_digits

    from bayes_transfer.data.digits import _raw_digits

    _raw_digits.cache_clear()
    images, labels = _raw_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images[:, 0], bunch.images.astype(np.float32) / 16.0)
    np.testing.assert_array_equal(labels, bunch.target)
