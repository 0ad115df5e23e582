"""The Fashion-MNIST tier: real 28 px images split into two 5-class tasks, read from the original idx files.

Files: the four idx files of Xiao, Rasul & Vollgraf (2017), ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``)
or not, found either in torchvision's ``FashionMNIST`` layout, ``<root>/FashionMNIST/raw/``, or in one flat
directory (``directory``; Debian's ``apt-get install dataset-fashion-mnist`` puts the four ``.gz`` files in
``/usr/share/datasets/fashion-mnist/``). Every file is checked: the idx magic number (2051 = unsigned bytes
in 3 dimensions for images, 2049 = 1 dimension for labels), 28 x 28 images, a length that matches the
header, labels in 0..9, as many labels as images. Nothing is downloaded.

Tasks (the digits tier's shape, :mod:`bayes_transfer.data.digits`):

* Source task (pre-training and the SWAG prior): classes 0-4 (T-shirt/top, trouser, pullover, dress,
  coat), labels 0..4: all their training images (30,000) and their t10k images as the source test set.
* Downstream task: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) relabelled 0..4. Their training
  images (30,000) are split, class-balanced with ``split_seed``, into a validation split of ``n_val``
  images (for tuning) and the training pool (the rest); training subsamples are drawn from the pool. The
  test set is their t10k images (5,000).
* Shifted test set: the downstream test images, each under its own random affine distortion (rotation up
  to 25 degrees, translation up to 1/8 of the image side, 15% scale, 0.2 shear) plus Gaussian pixel noise of
  std 0.1, all times ``shift_strength``, applied at 28 px in [0, 1] and clamped there, from a generator
  seeded with :data:`bayes_transfer.data.digits.SHIFT_SEED`; labels unchanged. Same seed, same images.

The sizes quoted are those of the real files (60,000 / 10,000 images, 6,000 / 1,000 per class); the loader
does not require them, so small files in the same format work too (the tests write such files).

Images are float32 tensors ``(N, 1, S, S)``, ``S = image_size`` (28, or 14 = 2 x 2 average pooling of the
28 px images): pixels divided by 255 (to [0, 1]) and then standardised with one scalar mean and (population)
std over all pixels of the source-train images at that size (``mean``/``std`` of the result), as for the
digits. :func:`augment` makes the random views for SimCLR and source training. The affine warps are the
digits module's (``_random_affine``, torch's ``affine_grid``/``grid_sample``), not torchvision's.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from bayes_transfer.data.digits import SHIFT_SEED, _random_affine
from bayes_transfer.data.embedded import EmbeddedSplits
from bayes_transfer.data.subsample import balanced_subsample

__all__ = ["FILES", "DEBIAN_DIR", "CLASSES", "NUM_CLASSES", "SOURCE_CLASSES", "DEFAULTS", "FashionMNISTData",
           "FashionMNISTFiles", "locate_files", "read_idx", "read_fashion_mnist", "load_fashion_mnist_tasks",
           "fashion_mnist_from_config", "augment"]

#: the four idx files, by role (each may also be gzipped, name + ".gz")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
#: where Debian's dataset-fashion-mnist package installs the four .gz files
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Fashion-MNIST's label names, 0..9
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: classes 0..4 form the source task, 5..9 (relabelled 0..4) the downstream task
SOURCE_CLASSES = 5
NUM_CLASSES = 5
SIDE = 28
#: the loader's defaults (the keys of the config's ``data`` section that :func:`fashion_mnist_from_config` reads)
DEFAULTS = {"root": "data", "fashion_mnist_dir": None, "split_seed": 0, "n_val": 1000, "shift_strength": 1.0,
            "image_size": 28}
IMAGE_SIZES = (28, 14)
_IMAGE_MAGIC, _LABEL_MAGIC = 0x00000803, 0x00000801  # idx: 0, 0, type 0x08 (unsigned byte), number of dims
# Shift at strength 1: degrees, fraction of the image side, relative scale, shear, pixel-noise std ([0, 1] units).
_SHIFT = dict(rotation=25.0, translation=0.125, scale=0.15, shear=0.2, noise=0.1)
# Augmentation at strength 1 (same units; a horizontal flip with probability 1/2 when strength > 0).
_AUGMENT = dict(rotation=15.0, translation=0.1, scale=0.1, shear=0.1)


@dataclass(frozen=True)
class FashionMNISTFiles:
    """The four files' arrays as stored (uint8 images ``(N, 28, 28)``, int64 labels) and their paths."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    paths: Mapping[str, str]


@dataclass(frozen=True)
class FashionMNISTData(EmbeddedSplits):
    """The Fashion-MNIST tasks: every split is a ``TensorDataset`` of ``(x, y)``.

    ``source_train_indices``, ``pool_indices`` and ``val_indices`` are positions in the train files,
    ``source_test_indices`` and ``test_indices`` (also those of ``shifted_test``) positions in the t10k
    files. ``mean``/``std`` are the standardisation constants, ``files`` the paths read.
    """

    source_classes: int
    image_size: int
    files: Mapping[str, str]


# ------------------------------------------------------------------------------------------------- the files
def _search_dirs(root: str | os.PathLike | None, directory: str | os.PathLike | None) -> list[Path]:
    if directory is not None:
        return [Path(directory)]
    return [Path("data" if root is None else root) / "FashionMNIST" / "raw"]


def _how_to_get(root, directory) -> str:
    """How to get the four files, for the missing-file error."""
    target = str("data" if root is None else root) if directory is None else "<root>"
    flat = "" if directory is None else f"; or copy the four files into {directory}/"
    lines = [
        "Get them in one of these ways:",
        f"  * with internet, torchvision's download, which writes {target}/FashionMNIST/raw/ (then set data.root: "
        f"{target}{' and remove data.fashion_mnist_dir' if directory is not None else ''}):",
        f"      python -c \"from torchvision.datasets import FashionMNIST as F; "
        f"F('{target}', train=True, download=True); F('{target}', train=False, download=True)\"",
        f"  * on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` (installs the four .gz files in "
        f"{DEBIAN_DIR}/), then set data.fashion_mnist_dir: {DEBIAN_DIR}{flat}",
    ]
    if DEBIAN_DIR.is_dir() and (directory is None or Path(directory) != DEBIAN_DIR):
        lines.append(f"    ({DEBIAN_DIR}/ exists on this machine)")
    return "\n".join(lines)


def locate_files(root: str | os.PathLike | None = None,
                 directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """The path of each of the four files (key as in :data:`FILES`), uncompressed preferred over ``.gz``.

    ``directory`` (a flat directory holding the four files) takes precedence over ``root`` (torchvision's
    layout, ``<root>/FashionMNIST/raw/``; default ``data``). Raises ``FileNotFoundError`` listing every
    expected path and how to get the files when any is missing.
    """
    dirs = _search_dirs(root, directory)
    found: dict[str, Path] = {}
    for key, name in FILES.items():
        for d in dirs:
            hit = next((p for p in (d / name, d / f"{name}.gz") if p.is_file()), None)
            if hit is not None:
                found[key] = hit
                break
    if len(found) < len(FILES):
        where = " or ".join(str(d) for d in dirs)
        listing = []
        for key, name in FILES.items():
            for d in dirs:
                status = f"found: {found[key]}" if key in found else "MISSING"
                listing.append(f"  {d / name}  or  {d / name}.gz   [{status}]")
        missing = [FILES[k] for k in FILES if k not in found]
        raise FileNotFoundError(
            f"Fashion-MNIST: {len(missing)} of the 4 idx files missing in {where} ({', '.join(missing)}). "
            "Expected paths (each file uncompressed or gzipped):\n" + "\n".join(listing) + "\n"
            + _how_to_get(root, directory))
    return found


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc}); expected a gzipped idx file") from exc


def read_idx(path: str | os.PathLike, kind: str) -> np.ndarray:
    """One idx file (gzipped if its name ends in ``.gz``) as a uint8 array, checked against what a
    Fashion-MNIST file of ``kind`` (``"images"``: ``(N, 28, 28)``, ``"labels"``: ``(N,)`` in 0..9) must be.

    Raises ``ValueError`` naming the file and what was expected.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind: expected 'images' or 'labels', got {kind!r}")
    path = Path(path)
    raw = _read_bytes(path)
    ndim, magic = (3, _IMAGE_MAGIC) if kind == "images" else (1, _LABEL_MAGIC)
    expected_magic = (f"{magic} (0x{magic:08x}: idx, unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}), "
                      f"the header of a Fashion-MNIST {kind} file")
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an idx header; expected magic number "
                         f"{expected_magic}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic number {found} (0x{found:08x}); expected {expected_magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes); expected {header} bytes of header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if kind == "images" and dims[1:] != (SIDE, SIDE):
        raise ValueError(f"{path}: images of {dims[1]} x {dims[2]} pixels; expected {SIDE} x {SIDE}")
    size = header + math.prod(dims)
    if len(raw) < size:
        raise ValueError(f"{path}: truncated: its header announces {dims[0]} {kind} ({size} bytes) but the file "
                         f"has {len(raw)} bytes{' uncompressed' if path.suffix == '.gz' else ''}")
    if len(raw) > size:
        raise ValueError(f"{path}: {len(raw) - size} bytes after the {size} its header announces "
                         f"({dims[0]} {kind}); expected exactly {size}")
    data = np.frombuffer(raw, dtype=np.uint8, count=size - header, offset=header).reshape(dims)
    if kind == "labels" and data.size and int(data.max()) >= len(CLASSES):
        bad = data[data >= len(CLASSES)]
        raise ValueError(f"{path}: {bad.size} label{'s' if bad.size > 1 else ''} out of range (e.g. {int(bad[0])} "
                         f"at position {int(np.flatnonzero(data >= len(CLASSES))[0])}); expected labels 0..9")
    return data


@functools.lru_cache(maxsize=2)
def _read_cached(paths: tuple[tuple[str, str], ...], stamps: tuple) -> FashionMNISTFiles:
    p = dict(paths)
    arrays = {key: read_idx(p[key], "images" if key.endswith("images") else "labels") for key in FILES}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise ValueError(f"{p[f'{split}_images']} holds {n_img} images but {p[f'{split}_labels']} holds "
                             f"{n_lab} labels; expected one label per image")
    return FashionMNISTFiles(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                             arrays["test_images"], arrays["test_labels"].astype(np.int64), p)


def read_fashion_mnist(root: str | os.PathLike | None = None,
                       directory: str | os.PathLike | None = None) -> FashionMNISTFiles:
    """Read and check the four files (located by :func:`locate_files`; cached per path and modification time)."""
    found = locate_files(root, directory)
    paths = tuple((k, str(v.resolve())) for k, v in found.items())
    stamps = tuple((v.stat().st_size, v.stat().st_mtime_ns) for v in found.values())
    return _read_cached(paths, stamps)


# ------------------------------------------------------------------------------------------------- the tasks
def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _to_unit(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, S, S)`` in [0, 1] (14 px: 2 x 2 average pooling)."""
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return F.avg_pool2d(x, 2) if image_size == 14 else x


def _shift(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The fixed distortion of the shifted test set, on [0, 1] images ``(N, 1, 28, 28)``."""
    if strength == 0.0:
        return x.clone()
    gen = torch.Generator().manual_seed(SHIFT_SEED)
    side = x.shape[-1]
    warped = _random_affine(x, gen, rotation=_SHIFT["rotation"] * strength,
                            translation=_SHIFT["translation"] * side * strength, scale=_SHIFT["scale"] * strength,
                            shear=_SHIFT["shear"] * strength, padding_mode="zeros")
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32) * (_SHIFT["noise"] * strength)
    return (warped + noise).clamp_(0.0, 1.0)


def load_fashion_mnist_tasks(root: str | os.PathLike | None = None, directory: str | os.PathLike | None = None,
                             split_seed: int = 0, n_val: int = 1000, shift_strength: float = 1.0,
                             image_size: int = 28) -> FashionMNISTData:
    """The source and downstream Fashion-MNIST tasks (see the module docstring); fresh tensors each call.

    ``split_seed`` fixes the downstream validation/pool split (independent of any run seed), ``n_val`` its
    size (class-balanced), ``shift_strength`` scales the shifted test set's distortion (0 = no shift),
    ``image_size`` is 28 or 14.
    """
    split_seed = _check_int("split_seed", split_seed, 0)
    n_val = _check_int("n_val", n_val, 0)
    if not (isinstance(shift_strength, (int, float)) and not isinstance(shift_strength, bool)
            and math.isfinite(shift_strength) and shift_strength >= 0):
        raise ValueError(f"shift_strength must be a finite number >= 0, got {shift_strength!r}")
    if image_size not in IMAGE_SIZES or isinstance(image_size, bool):
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    files = read_fashion_mnist(root, directory)
    ty, sy = files.train_labels, files.test_labels

    src_train = np.flatnonzero(ty < SOURCE_CLASSES)
    src_test = np.flatnonzero(sy < SOURCE_CLASSES)
    down = np.flatnonzero(ty >= SOURCE_CLASSES)
    test = np.flatnonzero(sy >= SOURCE_CLASSES)
    for name, idx, f in (("source training", src_train, "train_labels"), ("downstream training", down, "train_labels"),
                         ("downstream test", test, "test_labels")):
        if idx.size == 0:
            raise ValueError(f"{files.paths[f]}: no {name} images (classes "
                             f"{'0-4' if name.startswith('source') else '5-9'}); expected some")
    if n_val >= down.size:
        raise ValueError(f"n_val={n_val} must leave a non-empty training pool: {files.paths['train_labels']} has "
                         f"{down.size} downstream training images (classes 5-9)")
    down_y = ty[down] - SOURCE_CLASSES
    val = down[balanced_subsample(down_y, n_val, split_seed)] if n_val else down[:0]
    pool = np.setdiff1d(down, val)

    source_x = _to_unit(files.train_images[src_train], image_size)
    mean, std = float(source_x.double().mean()), float(source_x.double().std(correction=0))
    if not std > 0:
        raise ValueError(f"{files.paths['train_images']}: the source-train images are constant (pixel std 0)")

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).to(torch.float32)

    def split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, offset: int) -> TensorDataset:
        return TensorDataset(norm(_to_unit(images[idx], image_size)), torch.from_numpy(labels[idx] - offset))

    test_unit = _to_unit(files.test_images[test], 28)
    shifted = _shift(test_unit, float(shift_strength))
    if image_size == 14:
        shifted = F.avg_pool2d(shifted, 2)
    test_y = torch.from_numpy(sy[test] - SOURCE_CLASSES)
    return FashionMNISTData(
        source_train=TensorDataset(norm(source_x), torch.from_numpy(ty[src_train])),
        source_test=split(files.test_images, sy, src_test, 0),
        pool=split(files.train_images, ty, pool, SOURCE_CLASSES),
        val=split(files.train_images, ty, val, SOURCE_CLASSES),
        test=split(files.test_images, sy, test, SOURCE_CLASSES),
        shifted_test=TensorDataset(norm(shifted), test_y.clone()),
        num_classes=NUM_CLASSES,
        source_classes=SOURCE_CLASSES,
        source_train_indices=src_train,
        source_test_indices=src_test,
        pool_indices=pool,
        val_indices=val,
        test_indices=test,
        mean=mean,
        std=std,
        split_seed=split_seed,
        shift_strength=float(shift_strength),
        image_size=int(image_size),
        files=dict(files.paths),
    )


def fashion_mnist_from_config(data_cfg: Mapping) -> FashionMNISTData:
    """:func:`load_fashion_mnist_tasks` with the config's ``data`` section: ``root``, ``fashion_mnist_dir``,
    ``split_seed``, ``n_val``, ``shift_strength``, ``image_size`` (defaults in :data:`DEFAULTS`)."""
    cfg = {k: data_cfg.get(k, v) for k, v in DEFAULTS.items()}
    return load_fashion_mnist_tasks(root=cfg["root"], directory=cfg["fashion_mnist_dir"],
                                    split_seed=cfg["split_seed"], n_val=cfg["n_val"],
                                    shift_strength=cfg["shift_strength"], image_size=cfg["image_size"])


def augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0,
            noise_std: float = 0.1) -> torch.Tensor:
    """A random view of a batch ``(N, C, H, W)`` of (standardised) Fashion-MNIST images, for SimCLR and
    source training.

    Each image is flipped left-right with probability 1/2 (when ``strength > 0``), warped by its own small
    affine map (up to 15 degrees rotation, translation 1/10 of the side, 10% scale, 0.1 shear, times
    ``strength``; borders replicate the edge pixels) and gets Gaussian noise of std ``noise_std``. All
    randomness comes from ``generator``: the same seed gives the same views. Returns a new tensor.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (N, C, H, W), got "
                         f"{type(x).__name__} with shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if strength < 0 or noise_std < 0:
        raise ValueError(f"strength and noise_std must be >= 0, got {strength!r} and {noise_std!r}")
    if strength > 0:
        flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    side = x.shape[-1]
    out = _random_affine(x, generator, rotation=_AUGMENT["rotation"] * strength,
                         translation=_AUGMENT["translation"] * side * strength, scale=_AUGMENT["scale"] * strength,
                         shear=_AUGMENT["shear"] * strength, padding_mode="border")
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return out + noise.to(x.device) * noise_std
