"""The bad-input corpus: each bad config, file, datum or environment stops with one clear message that names the
key or file and what was expected, and leaves an existing result untouched.

Every case returns the call that must fail; the harness checks the exception type, the message fragment (a
regular expression), that a result file written before the case has the same bytes afterwards and that no
temporary file is left behind. Two config cases also go through a real ``snakemake -n`` in a workflow copy, to
show the workflow stops before any job.
"""

from __future__ import annotations

import copy
import errno
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import paper_files as pf
from bayes_transfer.config.check import ConfigError
from bayes_transfer.config.experiments import merged
from bayes_transfer.config.schema import prepare_config
from bayes_transfer.integrity import IntegrityError, stamp
from bayes_transfer.io import save_torch, write_json
from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())
PAPER = merged(copy.deepcopy(DEFAULT), yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text()))


# ---------------------------------------------------------------------------------------------- config
def _config(change: dict, base: dict = DEFAULT):
    cfg = merged(copy.deepcopy(base), change)
    return lambda tmp: (lambda: prepare_config(cfg))


CONFIG_CASES = [
    ("unknown key, top level", {"bogus": 1}, r"^bogus: unknown key; expected one of ablations, "),
    ("unknown key, level 2", {"train": {"stepz": 3}}, r"train\.stepz: unknown key; expected one of batch_size"),
    ("unknown key, level 3", {"ablations": {"rank": {"rankz": [1]}}},
     r"ablations\.rank\.rankz: unknown key; expected one of methods, ranks, truncation"),
    ("unknown key, segmentation level 3", {"segmentation": {"train": {"foo": 1}}},
     r"segmentation\.train\.foo: unknown key"),
    ("wrong type, integer", {"train": {"steps": "many"}}, r"train\.steps: expected an integer, got 'many'"),
    ("wrong type, list", {"sizes": 10}, r"sizes: expected a list, got 10"),
    ("out of range, lr", {"train": {"lr": -1}}, r"train\.lr: expected a number > 0, got -1"),
    ("out of range, holdout fraction", {"tuning": {"holdout_fraction": 1.5}},
     r"tuning\.holdout_fraction: expected a number < 1, got 1\.5"),
    ("out of range, grid value", {"tuning": {"grids": {"sgd_transfer": {"lr": [-0.1]}}}},
     r"tuning\.grids\.sgd_transfer\.lr\[0\]: expected a number > 0, got -0\.1"),
    ("empty list, sizes", {"sizes": []}, r"sizes: expected at least 1 item\(s\), got \[\]"),
    ("empty list, grid", {"tuning": {"grids": {"sgd_transfer": {"lr": []}}}},
     r"tuning\.grids\.sgd_transfer\.lr: expected at least 1 item\(s\)"),
    ("duplicate seeds", {"seeds": [0, 0]}, r"seeds: expected distinct items, got \[0, 0\]"),
    ("size larger than the pool", {"sizes": [10, 100000]},
     r"sizes\[1\]: training size 100000 is larger than the training pool of digits \(596 examples\)"),
    ("unknown method", {"methods": ["sgd_magic"]}, r"methods\[0\]: expected one of sgd_transfer, .*got 'sgd_magic'"),
    ("unknown grid method", {"tuning": {"grids": {"foo": {"lr": [0.1]}}}},
     r"tuning\.grids\.foo: unknown method; expected one of sgd_transfer"),
    ("unknown hyper-parameter", {"tuning": {"grids": {"sgd_transfer": {"lrr": [0.1]}}}},
     r"tuning\.grids\.sgd_transfer\.lrr: unknown hyper-parameter"),
    ("unknown dataset", {"data": {"dataset": "mnist"}}, r"data\.dataset: expected one of digits, .*got 'mnist'"),
    ("unknown backbone", {"model": {"arch": "resnet9000"}}, r"model\.arch: expected one of small_resnet, "),
    ("unknown segmentation backbone", {"segmentation": {"backbones": ["vgg16"]}},
     r"segmentation\.backbones\[0\]: expected one of resnet50, resnet101, got 'vgg16'"),
    ("unknown pre-training", {"pretrainings": ["moco"]}, r"pretrainings\[0\]: expected one of supervised, simclr"),
    ("contradictory: prior rank above the SWAG rank", {"train": {"prior_rank": 50}},
     r"train\.prior_rank: expected at most swag\.max_rank \(20\), got 50"),
    ("contradictory: ablation pre-training not run", {"pretrainings": ["supervised"],
                                                      "ablations": {"pretraining": "simclr"}},
     r"ablations\.pretraining: expected one of pretrainings \['supervised'\]"),
    ("contradictory: ablation size not among sizes", {"ablations": {"n_train": 33}},
     r"ablations\.n_train: 33 must be one of sizes"),
]
CASES = [(f"config: {name}", _config(change), ConfigError, msg) for name, change, msg in CONFIG_CASES]
CASES.append(("config: contradictory: CIFAR-10.1 as the shifted test of CIFAR-100",
              _config({"data": {"dataset": "cifar100"}}, PAPER), ConfigError,
              r"data\.shifted_test: cifar10\.1 is the shifted test set of cifar10 .*dataset 'cifar100'"))
CASES.append(("config: size larger than the CIFAR-10 pool", _config({"sizes": [10, 60000]}, PAPER), ConfigError,
              r"sizes\[1\]: training size 60000 is larger than the training pool of cifar10 \(50000 examples\)"))


# ---------------------------------------------------------------------------------------------- dataset files
def _idx(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.tobytes()


def _fashion(tmp: Path, damage) -> callable:
    from bayes_transfer.data import fashion_mnist as fm

    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), "test_images":
              rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), "train_labels": np.arange(40, dtype=np.uint8) % 10,
              "test_labels": np.arange(20, dtype=np.uint8) % 10}
    for role, a in arrays.items():
        (tmp / fm.FILES[role]).write_bytes(_idx(a, 2051 if "images" in role else 2049))
    damage(tmp / fm.FILES["train_images"])
    return lambda: fm.load_fashion_mnist_tasks(directory=tmp, n_val=10)


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"not the format!!"
    path.write_bytes(bytes(data))


def _paper(name: str, writer, damage, split: str = "train"):
    def setup(tmp: Path):
        from bayes_transfer.data.paper import load_paper_dataset

        writer(tmp)
        damage(tmp)
        return lambda: load_paper_dataset(name, tmp, split, image_size=8)
    return setup


def _voc(listed_missing: bool):
    def setup(tmp: Path):
        from bayes_transfer.data.segmentation_paper import load_segmentation_dataset

        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        if listed_missing:
            (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
        return lambda: load_segmentation_dataset("voc2012", tmp, "val", train_transform=False)
    return setup


def _cityscapes(tmp: Path):
    from bayes_transfer.data.segmentation_paper import load_segmentation_dataset

    (tmp / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    return lambda: load_segmentation_dataset("cityscapes", tmp, "val", train_transform=False)


def _cifar101(tmp: Path):
    from bayes_transfer.data.cifar101 import CIFAR101

    pf.write_cifar101(tmp)
    np.save(tmp / "cifar10.1_v6_data.npy", np.full((25, 32, 32, 3), np.nan, dtype=np.float32))
    return lambda: CIFAR101(tmp)


CIFAR10_BATCH = "cifar-10-batches-py/data_batch_3"
CASES += [
    ("file: Fashion-MNIST missing", lambda t: _fashion(t, Path.unlink), FileNotFoundError,
     r"train-images-idx3-ubyte"),
    ("file: Fashion-MNIST truncated", lambda t: _fashion(t, _truncate), ValueError,
     r"train-images-idx3-ubyte: truncated: its header announces 40 images"),
    ("file: Fashion-MNIST corrupted", lambda t: _fashion(t, _garble), ValueError,
     r"train-images-idx3-ubyte: magic number .*expected 2051"),
    ("file: CIFAR-10 batch missing", _paper("cifar10", pf.write_cifar10, lambda t: (t / CIFAR10_BATCH).unlink()),
     FileNotFoundError, r"dataset 'cifar10' not found: 1 of 7 expected path\(s\) missing(.|\n)*MISSING .*data_batch_3"),
    ("file: CIFAR-10 batch truncated", _paper("cifar10", pf.write_cifar10, lambda t: _truncate(t / CIFAR10_BATCH)),
     RuntimeError, r"could not load dataset 'cifar10' \(split 'train'\)(.|\n)*truncated, corrupted"),
    ("file: CIFAR-100 corrupted", _paper("cifar100", pf.write_cifar100,
                                         lambda t: _garble(t / "cifar-100-python" / "train")),
     RuntimeError, r"could not load dataset 'cifar100'(.|\n)*cifar-100-python/train"),
    ("file: Flowers-102 setid.mat missing", _paper("flowers102", pf.write_flowers102,
                                                   lambda t: (t / "flowers-102" / "setid.mat").unlink()),
     FileNotFoundError, r"dataset 'flowers102' not found(.|\n)*MISSING .*setid\.mat"),
    ("file: Flowers-102 labels truncated", _paper("flowers102", pf.write_flowers102,
                                                  lambda t: _truncate(t / "flowers-102" / "imagelabels.mat", 0.4)),
     RuntimeError, r"could not load dataset 'flowers102'(.|\n)*imagelabels\.mat"),
    ("file: Oxford Pets annotations corrupted", _paper(
        "oxford_pets", pf.write_oxford_pets,
        lambda t: (t / "oxford-iiit-pet" / "annotations" / "trainval.txt").write_text("garbage\n")),
     RuntimeError, r"could not load dataset 'oxford_pets'(.|\n)*trainval\.txt"),
    ("file: Oxford Pets test list missing", _paper(
        "oxford_pets", pf.write_oxford_pets,
        lambda t: (t / "oxford-iiit-pet" / "annotations" / "test.txt").unlink(), split="test"),
     FileNotFoundError, r"MISSING .*annotations/test\.txt"),
    ("file: CIFAR-10.1 not uint8 (NaN pixels)", _cifar101, ValueError,
     r"cifar10\.1_v6_data\.npy: expected a uint8 array of shape \(N, 32, 32, 3\), got dtype float32"),
    ("file: VOC split list missing", _voc(False), FileNotFoundError, r"MISSING .*ImageSets/Segmentation/val\.txt"),
    ("file: VOC listed image missing", _voc(True), FileNotFoundError,
     r"2007_000032.*listed in ImageSets/Segmentation/val\.txt"),
    ("file: Cityscapes labels missing", _cityscapes, FileNotFoundError, r"MISSING .*gtFine/val"),
]


# ---------------------------------------------------------------------------------------------- checkpoints, priors
def _small_model():
    from bayes_transfer.models.resnets import build_model

    torch.manual_seed(0)
    return build_model("small_resnet", 5)


def _pretrained(tmp: Path) -> Path:
    path = tmp / "pretrain" / "supervised.pt"
    save_torch(stamp({"state_dict": _small_model().state_dict(), "objective": {}, "metadata": {"arch": "x"}}), path)
    return path


def _flip(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(tensor.detach().contiguous().numpy().tobytes())
    assert at >= 0
    data[at + 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _checkpoint(kind: str):
    def setup(tmp: Path):
        from bayes_transfer.models.checkpoints import load_checkpoint_state, save_backbone_checkpoint
        from bayes_transfer.stages.source import load_pretrained

        if kind == "backbone truncated":
            path = save_backbone_checkpoint(_small_model(), tmp / "backbone.pt")
            _truncate(path)
            return lambda: load_checkpoint_state(path)
        path = _pretrained(tmp)
        if kind == "truncated":
            _truncate(path, 0.9)
        else:
            _flip(path, _small_model().state_dict()["layer1.0.conv1.weight"])
        return lambda: load_pretrained(str(path))
    return setup


def _backbone():
    from bayes_transfer.models.resnets import split_named_parameters

    return split_named_parameters(_small_model())[0]


def _prior(kind: str):
    def setup(tmp: Path):
        backbone = _backbone()
        params = dict(backbone)
        if kind == "names":
            params = {("renamed." + k if i == 3 else k): v for i, (k, v) in enumerate(params.items())}
        elif kind == "shapes":
            first = next(iter(params))
            params[first] = params[first].reshape(-1)
        path = tmp / "priors" / "supervised.pt"
        GaussianPrior.isotropic(params, 1.0, centred_at_params=True).save(path)
        if kind == "corrupted":
            _flip(path, torch.cat([p.detach().reshape(-1) for p in backbone.values()])[:64])
            return lambda: GaussianPrior.load(path)
        return lambda: GaussianPrior.load(path).check_params(backbone)
    return setup


CASES += [
    ("file: pre-trained checkpoint truncated", _checkpoint("truncated"), IntegrityError,
     r"could not read pre-trained checkpoint '.*supervised\.pt'.*expected a complete torch\.save file"),
    ("file: pre-trained checkpoint corrupted", _checkpoint("corrupted"), IntegrityError,
     r"pre-trained checkpoint '.*supervised\.pt' is corrupted: its tensors have checksum"),
    ("file: backbone checkpoint truncated", _checkpoint("backbone truncated"), IntegrityError,
     r"could not read checkpoint '.*backbone\.pt'.*truncated or corrupted"),
    ("file: prior corrupted", _prior("corrupted"), IntegrityError, r"prior file '.*supervised\.pt' is corrupted"),
    ("file: prior parameter names do not match the backbone", _prior("names"), PriorMismatchError,
     r"parameter #3: the prior expects 'renamed\..*' but the model has"),
    ("file: prior parameter shapes do not match the backbone", _prior("shapes"), PriorMismatchError,
     r"parameter 'conv1\.weight': the prior has shape \(\d+,\), the model \("),
]


# ---------------------------------------------------------------------------------------------- data
def _digits_task(change):
    def setup(tmp: Path):
        import dataclasses

        from torch.utils.data import TensorDataset

        from bayes_transfer.stages.task import load_task, training_subset

        task = load_task({"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0})
        x, y = (t.clone() for t in task.pool.tensors)
        change(x, y)
        task = dataclasses.replace(task, pool=TensorDataset(x, y))
        return lambda: training_subset(task, 25, seed=0)
    return setup


def _drop_class(x, y):
    y[y == 2] = 3


CASES += [
    ("data: NaN pixels", _digits_task(lambda x, y: x[7].view(-1)[5].fill_(float("nan"))), ValueError,
     r"pixels of the digits training pool must be finite numbers, got NaN or inf in example 7"),
    ("data: inf pixels", _digits_task(lambda x, y: x[11].view(-1)[0].fill_(float("inf"))), ValueError,
     r"pixels of the digits training pool must be finite numbers, got NaN or inf in example 11"),
    ("data: labels out of range", _digits_task(lambda x, y: y.__setitem__(4, 7)), ValueError,
     r"labels of the digits training pool must lie in 0\.\.4 \(5 classes\), got 7 at index 4"),
    ("data: an empty class after subsampling", _digits_task(_drop_class), ValueError,
     r"class 2 has no example in the pool of \d+ .*empty in the balanced subsample of n=25"),
]


# ---------------------------------------------------------------------------------------------- environment
def _unwritable(tmp: Path):
    (tmp / "blocker").write_text("a regular file where the results directory should be\n")
    return lambda: write_json(tmp / "blocker" / "runs" / "seed0.json", {"success": True})


def _no_space(writer: str):
    def setup(tmp: Path, monkeypatch):
        import bayes_transfer.io as io

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io.os, "fsync", full)
        results = tmp.parent / "results"  # over the existing results themselves (see the harness)
        if writer == "json":
            return lambda: write_json(results / "runs" / "existing.json", {"success": False})
        return lambda: GaussianPrior(torch.zeros(3), torch.ones(3)).save(results / "priors" / "existing.pt")
    return setup


CASES += [
    ("environment: results directory below a regular file", _unwritable, NotADirectoryError,
     r"could not write '.*blocker/runs/seed0\.json'.*expected '.*blocker/runs' to be a writable directory"),
    ("environment: no space left writing a result", _no_space("json"), OSError,
     r"could not write '.*results/runs/existing\.json': No space left on device; .*existing\.json is unchanged"),
    ("environment: no space left writing a prior", _no_space("prior"), OSError,
     r"could not write '.*results/priors/existing\.pt': No space left on device"),
]


# ---------------------------------------------------------------------------------------------- the harness
def _existing_results(tmp: Path) -> dict[Path, bytes]:
    """Result files of an earlier run, which no failure may change."""
    files = {tmp / "results" / "runs" / "existing.json": b'{"success": true, "seed": 0}\n',
             tmp / "results" / "priors" / "existing.pt": pickle.dumps({"an": "earlier prior"})}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("name, setup, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_with_a_clear_message_and_keeps_existing_results(tmp_path, monkeypatch, name, setup,
                                                                         error, message):
    pf.presence_only_md5(monkeypatch)  # tiny files never match the official md5s: test the parsing itself
    existing = _existing_results(tmp_path)
    case = tmp_path / "case"
    case.mkdir()
    call = setup(case, monkeypatch) if setup.__code__.co_argcount == 2 else setup(case)
    with pytest.raises(error, match=message) as info:
        call()
    assert str(info.value).strip(), "the message is empty"
    for path, data in existing.items():
        assert path.read_bytes() == data, f"{path} changed"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


def test_the_corpus_is_large_enough_and_covers_every_kind():
    kinds = {c[0].split(":")[0] for c in CASES}
    assert len(CASES) >= 30 and kinds == {"config", "file", "data", "environment"}


# ---------------------------------------------------------------------------------------------- through snakemake
@pytest.mark.parametrize("change, message", [
    ({"train": {"stepz": 3}}, "train.stepz: unknown key; expected one of"),
    ({"sizes": [10, 100000]}, "sizes[1]: training size 100000 is larger than the training pool of digits"),
])
def test_snakemake_dry_run_stops_before_any_job(workdir, change, message):
    existing = _existing_results(workdir)
    (workdir / "bad.yaml").write_text(yaml.safe_dump(change))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "bad.yaml"],
                         cwd=workdir, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr, out.stdout + out.stderr
    assert "Job stats" not in out.stdout + out.stderr  # no job was planned, let alone run
    assert sorted(p for p in (workdir / "results").rglob("*") if p.is_file()) == sorted(existing)
    for path, data in existing.items():
        assert path.read_bytes() == data
