"""Segmentation data: the digit scenes (deterministic, labels by construction) and tiny Pascal VOC / Cityscapes
directory layouts loaded through the same code the paper config uses (label mapping, ignore label 255)."""

import numpy as np
import pytest
import torch
from PIL import Image

from bayes_transfer.data.digits import load_digits_tasks
from bayes_transfer.data.scenes import DIGIT_SIZE, IGNORE_INDEX, SceneConfig, compose_scenes, load_digit_scenes
from bayes_transfer.data.segmentation_paper import (CITYSCAPES_CLASSES, cityscapes_train_id_lut,
                                                    load_segmentation_dataset)


# ------------------------------------------------------------------------------------------- digit scenes
def test_scenes_are_deterministic_and_seeded():
    a, b = load_digit_scenes(), load_digit_scenes()
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert all(torch.equal(s, t) for s, t in zip(x.tensors, y.tensors))
    c = load_digit_scenes(SceneConfig(seed=1))
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])
    assert a.num_classes == 6 and a.class_names[0] == "background" and a.class_names[5] == "digit 9"
    assert a.train.tensors[0].shape == (200, 1, 24, 24) and a.train.tensors[1].dtype == torch.int64


def test_scene_labels_follow_the_pasted_digits():
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 17, size=(10, DIGIT_SIZE, DIGIT_SIZE)) / 16.0
    classes = np.arange(10) % 5
    cfg = SceneConfig(canvas=32, min_digits=2, max_digits=4, stroke_threshold=0.5)
    x, y, layout = compose_scenes(digits, classes, 20, cfg, seed=7)
    for i, placed in enumerate(layout):
        assert 2 <= len(placed) <= 4
        covered = np.zeros((32, 32), dtype=bool)
        for r, c, j, cls in placed:
            box = (slice(r, r + DIGIT_SIZE), slice(c, c + DIGIT_SIZE))
            assert not covered[box].any(), "digits overlap"
            covered[box] = True
            d = digits[j]
            assert np.array_equal(x[i, 0][box], d.astype(np.float32))
            expected = np.where(d >= 0.5, 1 + cls, np.where(d > 0, IGNORE_INDEX, 0))
            assert np.array_equal(y[i][box], expected)
        assert np.all(y[i][~covered] == 0) and np.all(x[i, 0][~covered] == 0)
    assert set(np.unique(y)) <= {0, 1, 2, 3, 4, 5, IGNORE_INDEX}


def test_train_and_test_scenes_use_disjoint_digits_and_the_pretraining_standardisation():
    d = load_digits_tasks()
    t = load_digit_scenes()
    # background pixels are 0 in [0, 1], i.e. -mean/std after the digits' standardisation
    bg = t.train.tensors[0][:, 0][t.train.tensors[1] == 0]
    assert torch.allclose(bg, torch.full_like(bg, -d.mean / d.std))
    # every test scene's digits come from the test split: rebuild them with the test images only
    test01 = (d.test.tensors[0].numpy() * d.std + d.mean).clip(0, 1).round(4)
    x01 = (t.test.tensors[0].numpy() * d.std + d.mean).round(4)
    patches = {tuple(p.ravel()) for p in test01[:, 0]}
    pool01 = (d.pool.tensors[0].numpy() * d.std + d.mean).clip(0, 1).round(4)
    pool_patches = {tuple(p.ravel()) for p in pool01[:, 0]}
    _, _, layout = compose_scenes(np.round(test01[:, 0] * 16) / 16, d.test.tensors[1].numpy(), 100,
                                  SceneConfig(), seed=SceneConfig().seed + 1)
    for i, placed in enumerate(layout):
        for r, c, _, _ in placed:
            patch = tuple(x01[i, 0, r:r + 8, c:c + 8].ravel())
            assert patch in patches and patch not in pool_patches


def test_scene_config_rejects_impossible_scenes():
    with pytest.raises(ValueError, match="max_digits"):
        SceneConfig(canvas=16, max_digits=5)
    with pytest.raises(ValueError, match="min_digits"):
        SceneConfig(min_digits=3, max_digits=2)


# ------------------------------------------------------------------------------------------- Pascal VOC
VOC_PALETTE = [0, 0, 0, 128, 0, 0] + [0] * (3 * 254)  # indices are what counts; colours as in VOC


def make_voc(root, names=("2007_000032", "2007_000039", "2007_000063"), split=None):
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    labels = {}
    for k, name in enumerate(names):
        h, w = 12 + k, 10
        rgb = (np.arange(h * w * 3).reshape(h, w, 3) * (k + 1) % 255).astype(np.uint8)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{name}.jpg")
        lab = np.zeros((h, w), dtype=np.uint8)
        lab[2:6, 3:8] = 15  # person
        lab[2:6, 3] = 255  # object boundary ("difficult")
        lab[8:, :4] = 1 + k  # aeroplane / bicycle / bird
        img = Image.fromarray(lab, mode="P")
        img.putpalette(VOC_PALETTE)
        img.save(voc / "SegmentationClass" / f"{name}.png")
        labels[name] = lab
    split = split or {"train": names[:2], "val": names[2:]}
    for s, members in split.items():
        (voc / "ImageSets" / "Segmentation" / f"{s}.txt").write_text("\n".join(members) + "\n")
    return labels


def test_voc_layout_loads_with_palette_indices_and_border_255(tmp_path):
    labels = make_voc(tmp_path)
    val = load_segmentation_dataset("voc2012", tmp_path, "val", train_transform=False)
    assert len(val) == 1
    x, y = val[0]
    assert x.shape == (3, 14, 10) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert np.array_equal(y.numpy(), labels["2007_000063"].astype(np.int64))
    assert set(y.unique().tolist()) == {0, 3, 15, 255}
    train = load_segmentation_dataset("voc2012", tmp_path, "train", train_transform=True, crop_size=16)
    torch.manual_seed(0)
    xs, ys = zip(*(train[i] for i in range(len(train))))
    assert all(x.shape == (3, 16, 16) for x in xs) and all(y.shape == (16, 16) for y in ys)
    assert set(torch.cat([y.flatten() for y in ys]).unique().tolist()) <= {0, 1, 2, 15, 255}
    torch.manual_seed(0)
    again = [train[i] for i in range(len(train))]
    assert all(torch.equal(a[1], b) for a, b in zip(again, ys))  # seeded augmentation repeats


def test_voc_missing_files_name_every_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="SegmentationClass") as err:
        load_segmentation_dataset("voc2012", tmp_path, "val", train_transform=False)
    assert "VOCtrainval_11-May-2012.tar" in str(err.value)


def test_voc_through_the_stage_trains_and_scores_a_resnet_deeplab(tmp_path):
    """The paper path end to end on a tiny layout: loader -> smp DeepLabv3+ (ResNet-18 for speed) -> JSON."""
    import json

    from bayes_transfer.models.resnets import build_model
    from bayes_transfer.stages.segmentation import load_segmentation_task, segmentation_stage

    make_voc(tmp_path, names=[f"2007_{i:06d}" for i in range(6)],
             split={"train": [f"2007_{i:06d}" for i in range(4)], "val": [f"2007_{i:06d}" for i in range(4, 6)]})
    cfg = {"root": str(tmp_path), "crop_size": 20, "scale_range": [0.75, 1.25], "lr": 0.01, "sbd_root": None}
    task = load_segmentation_task("voc2012", cfg)
    assert task.num_classes == 21 and task.eval_split == "val" and len(task.train) == 4
    ckpt = tmp_path / "resnet18.pt"
    torch.save(build_model("resnet18", 1000).state_dict(), ckpt)  # a plain torchvision state dict
    outs = [tmp_path / "runs" / "seed0.json"]
    segmentation_stage("voc2012", "resnet50", "supervised", "bnn_isotropic_prior", [0], checkpoint=str(ckpt),
                       prior_path=None, dataset_cfg=cfg,
                       model_cfg={"output_stride": 16, "atrous_rates": [6, 12, 18], "decoder_channels": 16},
                       backbone_model={"arch": "resnet18", "kwargs": {}},
                       train_cfg={"steps": 3, "batch_size": 2, "samples_per_cycle": 1, "exploration_fraction": 0.5,
                                  "eval_batch_size": 2},
                       outs=[str(p) for p in outs])
    rec = json.loads(outs[0].read_text())
    assert rec["success"], rec["reason"]
    assert rec["model"]["output_stride"] == 16 and rec["backbone_keys_loaded"] > 100
    m = rec["metrics"]["val"]
    assert 0 <= m["miou"] <= 1 and m["miou"] == pytest.approx(m["miou_confusion"], abs=1e-6)
    assert m["scored_pixels"] == sum(int((y != 255).sum()) for _, y in task.eval)


# ------------------------------------------------------------------------------------------- Cityscapes
def make_cityscapes(root, split="val", ids=((7, 26), (0, 33)), cities=("frankfurt", "lindau")):
    frames = []
    for k, city in enumerate(cities):
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        prefix = f"{city}_000000_{k:06d}"
        Image.fromarray(np.full((8, 16, 3), 40 * k, dtype=np.uint8)).save(img_dir / f"{prefix}_leftImg8bit.png")
        lab = np.zeros((8, 16), dtype=np.uint8)
        lab[:4], lab[4:] = ids[k]
        lab[0, 0] = 1  # ego vehicle: no train id
        Image.fromarray(lab).save(gt_dir / f"{prefix}_gtFine_labelIds.png")
        frames.append(lab)
    return frames


def test_cityscapes_label_ids_map_to_the_19_train_ids_and_the_rest_to_255(tmp_path):
    make_cityscapes(tmp_path)
    ds = load_segmentation_dataset("cityscapes", tmp_path, "val", train_transform=False)
    assert len(ds) == 2
    (x0, y0), (_, y1) = ds[0], ds[1]  # sorted by file name: frankfurt, then lindau
    assert x0.shape == (3, 8, 16)
    assert torch.all(y0[:4].flatten()[1:] == 0) and torch.all(y0[4:] == 13)  # road -> 0, car -> 13
    assert y0[0, 0] == 255  # ego vehicle -> ignored
    assert torch.all(y1[:4] == 255) and torch.all(y1[4:] == 18)  # unlabeled -> 255, bicycle -> 18


def test_cityscapes_lookup_table_matches_the_official_train_ids():
    lut = cityscapes_train_id_lut()
    official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert {i: int(lut[i]) for i in range(256) if lut[i] != 255} == official
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car"


def test_cityscapes_missing_split_is_a_clear_error(tmp_path):
    make_cityscapes(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train"):
        load_segmentation_dataset("cityscapes", tmp_path, "train", train_transform=True)
