"""Tiny Fashion-MNIST files in the real idx format, for the tests of the Fashion-MNIST tier's task and workflow.

The idx encoding: bytes 0, 0, 0x08 (unsigned byte), the number of dimensions, each dimension as a big-endian
uint32, then the data; gzipped like Debian's and torchvision's downloads. (tests/unit/data/test_fashion_mnist.py
tests the loader itself with its own copy of this writer.)
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from bayes_transfer.data.fashion_mnist import FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion_mnist(directory: Path, per_class_train: int = 40, per_class_test: int = 8, seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """The four gzipped idx files in ``directory`` (flat, as Debian installs them): ``per_class_*`` images of
    every class 0..9, shuffled; each class has its own mean brightness, so a network can learn something.
    Returns the arrays written, by role (the keys of :data:`~bayes_transfer.data.fashion_mnist.FILES`)."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per)).astype(np.uint8)
        noise = rng.normal(0.0, 30.0, size=(labels.size, 28, 28))
        arrays[f"{split}_images"] = np.clip(40.0 + 20.0 * labels[:, None, None] + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    for key, name in FILES.items():
        with gzip.open(directory / f"{name}.gz", "wb") as fh:
            fh.write(idx_bytes(arrays[key]))
    return arrays
