"""The embedded default data: sklearn's 8x8 handwritten digits split into two 5-class tasks.

* Source task (pre-training, plays ImageNet's role): digits 0-4, labels 0..4, split
  stratified into source train / source test (85/15) with the fixed seed
  :data:`SOURCE_SPLIT_SEED`, so the source task never depends on the downstream split seed.
* Downstream task: digits 5-9 relabelled 0..4, split stratified with ``split_seed`` into a
  test split (``n_test``), a validation split (``n_val``) and the training pool (the rest).
* Shifted test set (plays CIFAR-10.1's role): the downstream test images, each under its own
  random affine distortion (rotation, translation, scale, shear) plus Gaussian pixel noise,
  drawn from a generator seeded with :data:`SHIFT_SEED`; labels are unchanged.

Images are float32 tensors ``(N, 1, 8, 8)``: pixel values are divided by 16 (to [0, 1]) and
then standardised with one scalar mean and std computed over all pixels of the source-train
images (the distortion of the shifted set is applied in [0, 1] space, before standardising).
The data ship with scikit-learn; nothing is downloaded. Only torch is used for the affine
warps (``affine_grid`` / ``grid_sample``), not torchvision.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from bayes_transfer.data.embedded import EmbeddedSplits
from bayes_transfer.data.subsample import balanced_subsample

__all__ = [
    "NUM_CLASSES",
    "SOURCE_SPLIT_SEED",
    "SHIFT_SEED",
    "DigitsData",
    "load_digits_tasks",
    "augment",
    "train_subset",
    "train_plus_val",
]

NUM_CLASSES = 5
SOURCE_TEST_FRACTION = 0.15
SOURCE_SPLIT_SEED = 0
SHIFT_SEED = 1010
# Shift at strength 1: max rotation (degrees), max translation (pixels), max relative scale
# change, max shear, pixel-noise std (in [0, 1] pixel units).
_SHIFT = dict(rotation=25.0, translation=1.0, scale=0.15, shear=0.2, noise=0.1)
# Augmentation at strength 1 (same units, noise in standardised units).
_AUGMENT = dict(rotation=15.0, translation=1.0, scale=0.1, shear=0.1)


@dataclass(frozen=True)
class DigitsData(EmbeddedSplits):
    """The digits tasks: every split is a ``TensorDataset`` of ``(x, y)``.

    ``*_indices`` are the positions of each split's examples in
    ``sklearn.datasets.load_digits()`` (``shifted_test`` uses ``test_indices``).
    ``mean``/``std`` are the standardisation constants (from the source-train images).
    """


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images in [0, 1] as float32 ``(N, 1, 8, 8)`` and int64 labels.

    Read straight from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, the file
    behind ``sklearn.datasets.load_digits``) without importing scikit-learn, which costs seconds per
    process; ``tests/unit/data/test_data.py`` checks the result equals ``load_digits()``.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-learn is needed for the bundled digits data (pip install scikit-learn)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():  # a future layout: fall back to the public loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return (bunch.images.astype(np.float32) / 16.0)[:, None, :, :], bunch.target.astype(np.int64)
    raw = np.loadtxt(path, delimiter=",", dtype=np.float64)
    images = (raw[:, :-1].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return images, raw[:, -1].astype(np.int64)


def _stratified_take(labels: np.ndarray, n_take: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``n_take`` examples drawn per class in proportion to class sizes."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = n_take * counts / labels.size
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders get the leftover examples (ties: lower class first).
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n_take - quota.sum()]] += 1
    taken = [
        rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)
    ]
    return np.sort(np.concatenate(taken))


def _random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    rotation: float,
    translation: float,
    scale: float,
    shear: float,
    padding_mode: str,
) -> torch.Tensor:
    """Warp each image by its own affine map with parameters uniform in the given ranges."""
    n, _, h, w = x.shape
    u = torch.rand(n, 5, generator=generator, device=generator.device, dtype=torch.float64)
    u = (2.0 * u - 1.0).to(device=x.device, dtype=x.dtype)  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(rotation)
    sc = 1.0 + u[:, 1] * scale
    sh = u[:, 2] * shear
    # Normalised coordinates span 2 units over the image, i.e. 2/size per pixel.
    tx = u[:, 3] * translation * 2.0 / w
    ty = u[:, 4] * translation * 2.0 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates: rotation @ shear, shrunk by 1/scale.
    a11, a12 = cos / sc, (cos * sh - sin) / sc
    a21, a22 = sin / sc, (sin * sh + cos) / sc
    theta = torch.stack(
        [torch.stack([a11, a12, tx], dim=1), torch.stack([a21, a22, ty], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _shift(images: np.ndarray, strength: float) -> np.ndarray:
    """The fixed distortion of the shifted test set, on [0, 1] images."""
    if strength == 0.0:
        return images.copy()
    gen = torch.Generator().manual_seed(SHIFT_SEED)
    x = torch.from_numpy(images)
    params = {k: v * strength for k, v in _SHIFT.items() if k != "noise"}
    warped = _random_affine(x, gen, padding_mode="zeros", **params)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32) * (_SHIFT["noise"] * strength)
    return (warped + noise).clamp_(0.0, 1.0).numpy()


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=8)
def _build(split_seed: int, n_test: int, n_val: int, shift_strength: float) -> dict:
    images, targets = _raw_digits()

    src_all = np.flatnonzero(targets < NUM_CLASSES)
    src_rng = np.random.default_rng(SOURCE_SPLIT_SEED)
    n_src_test = int(round(SOURCE_TEST_FRACTION * src_all.size))
    src_test_pos = _stratified_take(targets[src_all], n_src_test, src_rng)
    src_test = src_all[src_test_pos]
    src_train = np.setdiff1d(src_all, src_test)

    mean = float(images[src_train].mean())
    std = float(images[src_train].std())

    down_all = np.flatnonzero(targets >= NUM_CLASSES)
    if n_test + n_val >= down_all.size:
        raise ValueError(
            f"n_test + n_val must leave a non-empty training pool: n_test={n_test} + "
            f"n_val={n_val} >= {down_all.size} downstream examples"
        )
    rng = np.random.default_rng(split_seed)
    test_pos = _stratified_take(targets[down_all], n_test, rng)
    test = down_all[test_pos]
    rest = np.setdiff1d(down_all, test)
    val = rest[_stratified_take(targets[rest], n_val, rng)] if n_val else rest[:0]
    pool = np.setdiff1d(rest, val)

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return {
        "x": norm(images),
        "shifted_test_x": norm(_shift(images[test], shift_strength)),
        "y_source": targets,
        "y_down": targets - NUM_CLASSES,
        "source_train": src_train,
        "source_test": src_test,
        "pool": pool,
        "val": val,
        "test": test,
        "mean": mean,
        "std": std,
    }


def load_digits_tasks(
    split_seed: int = 0,
    n_test: int = 300,
    n_val: int = 150,
    shift_strength: float = 1.0,
) -> DigitsData:
    """Load the source and downstream digit tasks (cached; returns fresh tensors each call).

    ``split_seed`` fixes the downstream test/val/pool split (independent of any run seed);
    ``shift_strength`` scales the distortion of ``shifted_test`` (0 = no shift).
    """
    split_seed = _check_int("split_seed", split_seed, 0)
    n_test = _check_int("n_test", n_test, 1)
    n_val = _check_int("n_val", n_val, 0)
    finite = isinstance(shift_strength, (int, float)) and math.isfinite(shift_strength)
    if not finite or shift_strength < 0:
        raise ValueError(f"shift_strength must be a finite number >= 0, got {shift_strength!r}")
    arrays = _build(split_seed, n_test, n_val, float(shift_strength))

    def dataset(key: str, labels: str) -> TensorDataset:
        idx = arrays[key]
        x = torch.from_numpy(arrays["x"][idx])
        return TensorDataset(x, torch.from_numpy(arrays[labels][idx]))

    test_y = torch.from_numpy(arrays["y_down"][arrays["test"]])
    return DigitsData(
        source_train=dataset("source_train", "y_source"),
        source_test=dataset("source_test", "y_source"),
        pool=dataset("pool", "y_down"),
        val=dataset("val", "y_down"),
        test=dataset("test", "y_down"),
        shifted_test=TensorDataset(torch.from_numpy(arrays["shifted_test_x"].copy()), test_y),
        num_classes=NUM_CLASSES,
        source_train_indices=arrays["source_train"].copy(),
        source_test_indices=arrays["source_test"].copy(),
        pool_indices=arrays["pool"].copy(),
        val_indices=arrays["val"].copy(),
        test_indices=arrays["test"].copy(),
        mean=arrays["mean"],
        std=arrays["std"],
        split_seed=split_seed,
        shift_strength=float(shift_strength),
    )


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    strength: float = 1.0,
    noise_std: float = 0.1,
) -> torch.Tensor:
    """A random view of a batch ``(N, C, H, W)`` of (standardised) digit images, for SimCLR.

    Each image gets its own small affine warp (up to 15 degrees rotation, 1 pixel
    translation, 10% scale, 0.1 shear, times ``strength``; borders replicate the edge pixels)
    plus Gaussian noise of std ``noise_std``. All randomness comes from ``generator``, so a
    generator seeded the same way gives the same views. Returns a new tensor.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            "x must be a floating-point tensor of shape (N, C, H, W), got "
            f"{type(x).__name__} with shape {tuple(getattr(x, 'shape', ()))}"
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if strength < 0 or noise_std < 0:
        raise ValueError(f"strength and noise_std must be >= 0, got {strength!r} and {noise_std!r}")
    params = {k: v * strength for k, v in _AUGMENT.items()}
    out = _random_affine(x, generator, padding_mode="border", **params)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return out + noise.to(x.device) * noise_std


def train_subset(data: DigitsData, n: int, seed: int) -> TensorDataset:
    """The class-balanced subsample of size ``n`` of ``data.pool`` for run seed ``seed``."""
    x, y = data.pool.tensors
    idx = torch.from_numpy(balanced_subsample(y, n, seed))
    return TensorDataset(x[idx], y[idx])


def train_plus_val(data: DigitsData, n: int, seed: int) -> TensorDataset:
    """``train_subset(data, n, seed)`` followed by the whole validation split.

    For the protocol that tunes on the validation split and then retrains on train + val.
    """
    tx, ty = train_subset(data, n, seed).tensors
    vx, vy = data.val.tensors
    return TensorDataset(torch.cat([tx, vx]), torch.cat([ty, vy]))
