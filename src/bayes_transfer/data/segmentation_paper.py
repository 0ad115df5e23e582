"""The paper's segmentation datasets, read through torchvision's own classes (nothing is downloaded).

=============  ==========================================================  ======================================
name           torchvision class and layout under ``root``                 labels
=============  ==========================================================  ======================================
voc2012        ``VOCSegmentation(root, year="2012", image_set=split)``:     21 classes (0 background); the
               ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,          palette PNGs' 255 (object boundaries,
               ImageSets/Segmentation/{train,val}.txt}``                    "difficult") is kept as the ignore label
cityscapes     ``Cityscapes(root, split, mode="fine", target_type=          the 34 label ids are mapped to the 19
               "semantic")``: ``leftImg8bit/{split}/{city}/                 train ids of torchvision's
               *_leftImg8bit.png`` and ``gtFine/{split}/{city}/             ``Cityscapes.classes``; every other id
               *_gtFine_labelIds.png``                                      becomes 255 (ignored)
=============  ==========================================================  ======================================

Optionally the VOC training split is extended by SBD ("train_aug", as in DeepLab): torchvision's
``SBDataset(sbd_root, image_set="train_noval", mode="segmentation")``, i.e. SBD's training images minus
VOC 2012 val, so val stays unseen.

Transforms (paper appendix C.1; DeepLab's recipe): training images are randomly rescaled (factor uniform
in ``scale_range``), padded to at least ``crop_size`` (image 0 after normalisation, label 255), randomly
cropped to ``crop_size`` x ``crop_size`` and flipped horizontally with probability 1/2; evaluation images
are used whole. Images are normalised with ImageNet's mean and std. Randomness comes from torch's global
generator, which the training loop seeds (per DataLoader worker torch seeds it from that), so runs repeat.
Items are ``(image float32 (3, H, W), label int64 (H, W))``; DeepLab's divisibility by the output stride is
handled by the batch collation (:func:`bayes_transfer.data.padding.pad_collate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["SEGMENTATION_DATASETS", "NUM_CLASSES", "IGNORE_INDEX", "VOC_CLASSES", "CITYSCAPES_CLASSES",
           "cityscapes_train_id_lut", "expected_segmentation_files", "SegmentationTransform", "LabelledImages",
           "load_segmentation_dataset"]

SEGMENTATION_DATASETS = ("voc2012", "cityscapes")
NUM_CLASSES = {"voc2012": 21, "cityscapes": 19}
IGNORE_INDEX = 255
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
SPLITS = {"voc2012": ("train", "val"), "cityscapes": ("train", "val")}

_SOURCE = {
    "voc2012": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar extracted in root "
               "(it unpacks to VOCdevkit/VOC2012)",
    "cityscapes": "https://www.cityscapes-dataset.com (registration): leftImg8bit_trainvaltest.zip and "
                  "gtFine_trainvaltest.zip extracted in root",
    "sbd": "SBD's benchmark.tgz (benchmark_RELEASE/dataset: img/, cls/, train.txt) plus train_noval.txt "
           "in sbd_root",
}


def cityscapes_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table label id -> train id (0..18), 255 for every id without a train id.

    Built from ``torchvision.datasets.Cityscapes.classes`` (ids 7 road -> 0, ..., 33 bicycle -> 18).
    """
    from torchvision.datasets import Cityscapes

    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < NUM_CLASSES["cityscapes"]:
            lut[c.id] = c.train_id
    return lut


def expected_segmentation_files(name: str, root: str | Path, split: str) -> list[Path]:
    """The directories and files torchvision's class reads for ``name``/``split`` (a trailing / = directory)."""
    root = Path(root)
    if name == "voc2012":
        voc = root / "VOCdevkit" / "VOC2012"
        return [voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation" / f"{split}.txt"]
    if name == "cityscapes":
        return [root / "leftImg8bit" / split, root / "gtFine" / split]
    raise ValueError(f"unknown segmentation dataset {name!r}; known: {', '.join(SEGMENTATION_DATASETS)}")


def _require(paths: Sequence[Path], what: str, source: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        listing = "\n".join(f"  {'MISSING' if p in missing else 'found  '} {p}" for p in paths)
        raise FileNotFoundError(f"{what}: {len(missing)} expected path(s) missing:\n{listing}\n"
                                f"To obtain them: {source}.")


class SegmentationTransform:
    """Joint image/label transform: ``(PIL image, label array) -> (float tensor, int64 tensor)``.

    ``train=True``: random scale in ``scale_range``, pad to ``crop_size``, random crop, random flip;
    ``train=False``: the whole image. Both normalise with ImageNet statistics.
    """

    def __init__(self, train: bool, crop_size: int = 513, scale_range: Sequence[float] = (0.5, 2.0),
                 ignore_index: int = IGNORE_INDEX) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size!r}")
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")
        self.train, self.crop_size, self.scale_range, self.ignore_index = train, int(crop_size), (lo, hi), ignore_index
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, image, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        x = (x.float() / 255.0 - self.mean) / self.std
        y = torch.from_numpy(np.asarray(label, dtype=np.int64).copy())
        if not self.train:
            return x, y
        lo, hi = self.scale_range
        s = lo + (hi - lo) * float(torch.rand(()))
        h, w = y.shape
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) != (h, w):
            x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            y = F.interpolate(y[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        c = self.crop_size
        ph, pw = max(0, c - nh), max(0, c - nw)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
            y = F.pad(y, (0, pw, 0, ph), value=self.ignore_index)
        top = int(torch.randint(0, y.shape[0] - c + 1, ()))
        left = int(torch.randint(0, y.shape[1] - c + 1, ()))
        x, y = x[:, top:top + c, left:left + c], y[top:top + c, left:left + c]
        if float(torch.rand(())) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


class LabelledImages(Dataset):
    """A torchvision segmentation dataset with its labels mapped (``lut``) and a joint transform applied."""

    def __init__(self, base: Dataset, transform: SegmentationTransform, lut: np.ndarray | None = None) -> None:
        self.base, self.transform, self.lut = base, transform, lut

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, target = self.base[i]
        label = np.asarray(target, dtype=np.uint8 if self.lut is not None else np.int64)
        if self.lut is not None:
            label = self.lut[label]
        return self.transform(image, label)


def load_segmentation_dataset(name: str, root: str | Path, split: str, *, train_transform: bool,
                              crop_size: int = 513, scale_range: Sequence[float] = (0.5, 2.0),
                              sbd_root: str | Path | None = None) -> Dataset:
    """``voc2012`` or ``cityscapes`` ``split`` ("train" or "val") as (image, label) pairs (see module doc).

    ``sbd_root`` (VOC training split only) adds SBD's ``train_noval`` images (DeepLab's "train_aug").
    Missing files raise ``FileNotFoundError`` listing what was expected and where the data come from.
    """
    from torchvision import datasets

    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; known: {', '.join(SEGMENTATION_DATASETS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"{name}: split must be one of {SPLITS[name]}, got {split!r}")
    _require(expected_segmentation_files(name, root, split), f"{name} {split} under {root}", _SOURCE[name])
    transform = SegmentationTransform(train_transform, crop_size, scale_range)
    if name == "voc2012":
        base = datasets.VOCSegmentation(str(root), year="2012", image_set=split)
        missing = [p for p in base.images[:1] + base.targets[:1] if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"voc2012 {split}: {missing[0]} (listed in ImageSets/Segmentation/{split}.txt) "
                                    "does not exist")
        ds: Dataset = LabelledImages(base, transform)
        if sbd_root is not None and split == "train":
            sbd = Path(sbd_root)
            _require([sbd / "img", sbd / "cls", sbd / "train_noval.txt"], f"SBD under {sbd}", _SOURCE["sbd"])
            aug = datasets.SBDataset(str(sbd), image_set="train_noval", mode="segmentation")
            ds = ConcatDataset([ds, LabelledImages(aug, transform)])
        return ds
    base = datasets.Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    # os.listdir order differs between file systems: sort so that a seed gives the same batches everywhere
    order = sorted(range(len(base.images)), key=lambda i: base.images[i])
    base.images = [base.images[i] for i in order]
    base.targets = [base.targets[i] for i in order]
    if not base.images:
        raise FileNotFoundError(f"cityscapes {split}: no *_leftImg8bit.png under {Path(root) / 'leftImg8bit' / split}")
    return LabelledImages(base, transform, cityscapes_train_id_lut())
