"""Digit scenes: the embedded default's semantic-segmentation task (plays Pascal VOC / Cityscapes).

A scene is a ``canvas x canvas`` image holding 1..``max_digits`` downstream digits (sklearn digits 5-9,
the same images the classification tables use) pasted at random, non-overlapping integer positions on a
black background. Every pixel gets a label:

* ``0`` background,
* ``1 + c`` for a stroke pixel of a digit of downstream class ``c`` (digit ``5 + c``), i.e. 6 classes,
* :data:`IGNORE_INDEX` (255) for the faint rim of a digit: pixels inside a digit's 8 x 8 box whose
  intensity lies strictly between 0 and ``stroke_threshold``. Pascal VOC marks object boundaries the same
  way (a band labelled 255 that is never scored), so the metric's ignore label is exercised by the
  default too.

Why this construction: the pre-trained backbones see 8 x 8 digits, so a scene keeps the digits at the
backbone's own scale (no resizing) and the segmentation decoder must localise and classify them, the
job DeepLabv3+ does on VOC. Training scenes draw their digits from the downstream training pool (pool +
validation split), test scenes from the downstream test split, so no digit image is in both.

Everything is deterministic: one ``numpy.random.default_rng(seed)`` per split (``seed`` for training,
``seed + 1`` for test) chooses digit counts, images and positions. Pixels are composed in [0, 1] and
then standardised with the digits' own source-train mean and std (as the backbone was pre-trained).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["IGNORE_INDEX", "DIGIT_SIZE", "SceneConfig", "SceneTask", "compose_scenes", "load_digit_scenes"]

IGNORE_INDEX = 255
DIGIT_SIZE = 8


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are made (the ``segmentation.scenes`` section of the config)."""

    canvas: int = 24
    min_digits: int = 1
    max_digits: int = 3
    n_train: int = 200
    n_test: int = 100
    seed: int = 0
    stroke_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("canvas", "min_digits", "max_digits", "n_train", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"scenes.{name} must be a positive int, got {v!r}")
        if self.canvas < DIGIT_SIZE:
            raise ValueError(f"scenes.canvas must be >= {DIGIT_SIZE} (one digit), got {self.canvas}")
        if self.min_digits > self.max_digits:
            raise ValueError(f"scenes.min_digits ({self.min_digits}) is above scenes.max_digits ({self.max_digits})")
        cells = (self.canvas // DIGIT_SIZE) ** 2
        if self.max_digits > cells:
            raise ValueError(f"scenes.max_digits={self.max_digits} digits of {DIGIT_SIZE}x{DIGIT_SIZE} cannot be "
                             f"placed without overlap on a {self.canvas}x{self.canvas} canvas (at most {cells})")
        if not 0.0 < self.stroke_threshold <= 1.0:
            raise ValueError(f"scenes.stroke_threshold must be in (0, 1], got {self.stroke_threshold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"scenes.seed must be an int >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class SceneTask:
    """Training and test scenes: ``TensorDataset(x (N, 1, H, W) float32, y (N, H, W) int64)``."""

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX


def _positions(rng: np.random.Generator, k: int, canvas: int, max_tries: int = 1000) -> list[tuple[int, int]]:
    """``k`` top-left corners of non-overlapping 8x8 boxes (rejection sampling, then a grid fallback)."""
    span = canvas - DIGIT_SIZE + 1
    chosen: list[tuple[int, int]] = []
    for _ in range(max_tries):
        if len(chosen) == k:
            return chosen
        r, c = int(rng.integers(span)), int(rng.integers(span))
        if all(abs(r - r2) >= DIGIT_SIZE or abs(c - c2) >= DIGIT_SIZE for r2, c2 in chosen):
            chosen.append((r, c))
    if len(chosen) == k:
        return chosen
    # crowded canvas: distinct cells of the 8-pixel grid always fit (SceneConfig checks k <= cells)
    per_row = canvas // DIGIT_SIZE
    cells = rng.permutation(per_row * per_row)[:k]
    return [(int(i // per_row) * DIGIT_SIZE, int(i % per_row) * DIGIT_SIZE) for i in cells]


def compose_scenes(images01: np.ndarray, labels: np.ndarray, n_scenes: int, cfg: SceneConfig,
                   seed: int) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """Compose ``n_scenes`` scenes from 8x8 digit images in [0, 1] and their classes (0-based).

    Returns ``(x, y, layout)``: images ``(n, 1, canvas, canvas)`` float32 in [0, 1], label maps
    ``(n, canvas, canvas)`` int64 (0 background, ``1 + class`` strokes, 255 faint rims), and per scene the
    list of ``(row, col, image_index, class)`` of its digits.
    """
    images01 = np.asarray(images01, dtype=np.float32).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
    labels = np.asarray(labels, dtype=np.int64)
    if len(images01) != len(labels) or len(labels) == 0:
        raise ValueError(f"need one label per digit image and at least one image, got {len(images01)} images "
                         f"and {len(labels)} labels")
    rng = np.random.default_rng(seed)
    n, h = n_scenes, cfg.canvas
    x = np.zeros((n, 1, h, h), dtype=np.float32)
    y = np.zeros((n, h, h), dtype=np.int64)
    layout = []
    for i in range(n):
        k = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
        idx = rng.choice(len(labels), size=k, replace=False)
        placed = []
        for (r, c), j in zip(_positions(rng, k, h), idx):
            digit = images01[j]
            x[i, 0, r:r + DIGIT_SIZE, c:c + DIGIT_SIZE] = digit
            box = np.where(digit >= cfg.stroke_threshold, 1 + labels[j],
                           np.where(digit > 0, IGNORE_INDEX, 0))
            y[i, r:r + DIGIT_SIZE, c:c + DIGIT_SIZE] = box
            placed.append((r, c, int(j), int(labels[j])))
        layout.append(placed)
    return x, y, layout


def load_digit_scenes(cfg: SceneConfig | None = None, split_seed: int = 0, n_test_digits: int = 300,
                      n_val_digits: int = 150) -> SceneTask:
    """Training scenes from the downstream pool (+ validation) digits, test scenes from the test digits.

    ``split_seed``, ``n_test_digits`` and ``n_val_digits`` are the ``data`` section's digit split, so the
    scenes use exactly the digits the classification tables train and test on.
    """
    from .digits import NUM_CLASSES, load_digits_tasks

    cfg = cfg or SceneConfig()
    d = load_digits_tasks(split_seed=split_seed, n_test=n_test_digits, n_val=n_val_digits)

    def raw(ds: TensorDataset) -> tuple[np.ndarray, np.ndarray]:
        # undo the standardisation: back to [0, 1] pixel intensities (exact up to float rounding)
        x01 = (ds.tensors[0].numpy() * d.std + d.mean).clip(0.0, 1.0)
        return np.round(x01 * 16.0) / 16.0, ds.tensors[1].numpy()

    pool_x, pool_y = raw(d.pool)
    val_x, val_y = raw(d.val)
    test_x, test_y = raw(d.test)
    train = compose_scenes(np.concatenate([pool_x, val_x]), np.concatenate([pool_y, val_y]), cfg.n_train,
                           cfg, cfg.seed)
    test = compose_scenes(test_x, test_y, cfg.n_test, cfg, cfg.seed + 1)

    def dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        xs = ((x - d.mean) / d.std).astype(np.float32)
        return TensorDataset(torch.from_numpy(xs), torch.from_numpy(y))

    names = ("background",) + tuple(f"digit {5 + c}" for c in range(NUM_CLASSES))
    return SceneTask(dataset(*train[:2]), dataset(*test[:2]), 1 + NUM_CLASSES, names)
