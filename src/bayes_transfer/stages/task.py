"""The data of one configured experiment: source and downstream sets, training subsamples, held-out splits.

:func:`load_task` reads the ``data`` section of the config into a :class:`Task` (the digits, Fashion-MNIST's idx
files, or a paper-scale dataset read from disk; which datasets are embedded: :mod:`bayes_transfer.data.registry`); :func:`training_subset` is the class-balanced subsample of size n for a seed and
:func:`holdout_split` cuts a tuning subsample into its training and held-out validation parts, and
:func:`tuning_data` is the (training, validation) pair of one tuning size under either protocol
(``tuning.validation``: the task's own validation split or a held-out part; see
:mod:`bayes_transfer.stages.experiment`). Dataset modules are imported only when their dataset is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from bayes_transfer.data.subsample import balanced_subsample, check_pool

__all__ = ["Task", "load_task", "source_train_set", "training_subset", "holdout_split", "tuning_data",
           "VALIDATION_PROTOCOLS"]

#: ``tuning.validation``: score every grid point on the task's own validation split, or on a held-out part
VALIDATION_PROTOCOLS = ("task", "holdout")


@dataclass
class Task:
    """Source and downstream data of one configured dataset.

    ``val`` is the dataset's own validation split (None if it has none); ``tuning_pool`` the part of ``pool``
    the tuning subsamples are drawn from when they are scored on ``val`` (the pool without ``val``), so a
    validation image is never also a training image of the fit it scores.
    """

    name: str
    source_train: Dataset
    pool: Dataset
    test: Dataset
    shifted_test: Dataset | None
    num_classes: int
    source_classes: int
    metric: str = "accuracy"
    augment: Any = None
    val: Dataset | None = None
    tuning_pool: Dataset | None = None
    #: the OOD sets every fit also predicts on (name -> images; labels unused): see :func:`ood_sets`
    ood: dict[str, Dataset] = field(default_factory=dict)
    #: the source task's held-out test images with their source labels (embedded tiers; None at paper scale)
    source_test: Dataset | None = None

    def labels(self, ds: Dataset) -> np.ndarray:
        if isinstance(ds, TensorDataset):
            return ds.tensors[1].numpy()
        if isinstance(ds, Subset):
            return self.labels(ds.dataset)[np.asarray(ds.indices)]
        from bayes_transfer.data.splits import labels_of

        return labels_of(ds)

    def eval_sets(self) -> dict[str, Dataset]:
        """What a fit predicts on: the test set, the shifted test set, and the OOD sets (scored for OOD
        detection against the test set, :mod:`bayes_transfer.results.ood`)."""
        out = {"test": self.test}
        if self.shifted_test is not None:
            out["shifted_test"] = self.shifted_test
        return out | self.ood


#: the OOD sets of an embedded tier (``data.ood: true``): near OOD, the source classes' held-out test images (the
#: other five classes of the same dataset); far OOD, uniform noise images over the test images' pixel range
OOD_SETS = ("ood_source", "ood_noise")
#: seed of the noise images (fixed: the OOD set is part of the tier, not of a run)
OOD_NOISE_SEED = 0


def ood_sets(source_test: TensorDataset, test: TensorDataset, n: int | None = None) -> dict[str, TensorDataset]:
    """The embedded tiers' OOD sets (:data:`OOD_SETS`), with label -1 (no downstream class): all source test
    images and as many noise images as test images, or ``n`` of each (``data.n_ood``; the source images a seeded
    random subset)."""
    x = test.tensors[0]
    g = torch.Generator().manual_seed(OOD_NOISE_SEED)
    shape = x.shape if n is None else (min(int(n), len(x)), *x.shape[1:])
    noise = x.min() + (x.max() - x.min()) * torch.rand(shape, generator=g, dtype=x.dtype)
    src = source_test.tensors[0]
    if n is not None and int(n) < len(src):
        src = src[torch.randperm(len(src), generator=torch.Generator().manual_seed(OOD_NOISE_SEED))[:int(n)]]
    return {"ood_source": TensorDataset(src, torch.full((len(src),), -1, dtype=torch.long)),
            "ood_noise": TensorDataset(noise, torch.full((len(noise),), -1, dtype=torch.long))}


def load_task(data_cfg: Mapping) -> Task:
    """The datasets of ``data_cfg`` (the ``data`` section of the config)."""
    name = data_cfg["dataset"]
    if name == "digits":
        from bayes_transfer.data.digits import augment, load_digits_tasks

        d = load_digits_tasks(split_seed=data_cfg.get("split_seed", 0), n_test=data_cfg.get("n_test", 300),
                              n_val=data_cfg.get("n_val", 150), shift_strength=data_cfg.get("shift_strength", 1.0))
        # the digits' own validation split scores the tuning fits (drawn from the pool without it) and joins the
        # pool of the evaluation fits (the paper retrains on train + validation; see bayes_transfer.stages.experiment)
        pool = TensorDataset(torch.cat([d.pool.tensors[0], d.val.tensors[0]]),
                             torch.cat([d.pool.tensors[1], d.val.tensors[1]]))
        val = d.val if len(d.val) else None
        return Task("digits", d.source_train, pool, d.test, d.shifted_test, d.num_classes, d.num_classes,
                    "accuracy", augment, val=val, tuning_pool=d.pool if val is not None else None,
                    ood=ood_sets(d.source_test, d.test, data_cfg.get("n_ood")) if data_cfg.get("ood", True) else {},
                    source_test=d.source_test)
    if name == "fashion_mnist":
        return _fashion_mnist_task(data_cfg)
    from bayes_transfer.data import paper
    from bayes_transfer.data.cifar101 import load_cifar101
    from bayes_transfer.data.transforms import simclr_augment

    root = data_cfg.get("root", "data")
    size = data_cfg.get("image_size", 224)
    pool = paper.load_pool(name, root, image_size=size)  # Flowers-102: train + val
    test = paper.load_paper_dataset(name, root, "test", image_size=size, train_transform=False)
    shifted = (load_cifar101(Path(root) / "cifar10.1", image_size=size)
               if data_cfg.get("shifted_test") == "cifar10.1" else None)
    # the source task (ImageNet) is read only by SWAG (prior_stage), see source_train_set
    return Task(name, None, pool, test, shifted, paper.NUM_CLASSES[name], 1000, paper.PAPER_METRIC[name],
                simclr_augment)


def _fashion_mnist_task(data_cfg: Mapping) -> Task:
    """Fashion-MNIST (:mod:`bayes_transfer.data.fashion_mnist`) in the digits' shape: classes 0-4 the source
    task, 5-9 the downstream task; the validation split scores the tuning fits (drawn from the pool without it)
    and joins the pool of the evaluation fits."""
    from bayes_transfer.data.fashion_mnist import augment, fashion_mnist_from_config

    d = fashion_mnist_from_config(data_cfg)
    val = d.val if len(d.val) else None
    pool = TensorDataset(torch.cat([d.pool.tensors[0], d.val.tensors[0]]),
                         torch.cat([d.pool.tensors[1], d.val.tensors[1]]))
    return Task("fashion_mnist", d.source_train, pool, d.test, d.shifted_test, d.num_classes, d.source_classes,
                "accuracy", augment, val=val, tuning_pool=d.pool if val is not None else None,
                ood=ood_sets(d.source_test, d.test, data_cfg.get("n_ood")) if data_cfg.get("ood", True) else {},
                source_test=d.source_test)


def source_train_set(task: Task, data_cfg: Mapping) -> Dataset:
    """The source task's training set: the source split of an embedded dataset, or ImageNet's at paper scale."""
    if task.source_train is not None:
        return task.source_train
    from bayes_transfer.data.imagenet import load_imagenet_train

    return load_imagenet_train(data_cfg.get("root", "data"), data_cfg.get("image_size", 224))


def training_subset(task: Task, n: int, seed: int, pool: Dataset | None = None) -> Dataset:
    """The class-balanced subsample of size ``n`` of the downstream pool (or of ``pool``) for ``seed``."""
    pool = task.pool if pool is None else pool
    labels = task.labels(pool)
    if n > len(labels):
        raise ValueError(f"training size {n} is larger than the downstream pool ({len(labels)} examples)")
    pixels = task.pool.tensors[0] if isinstance(task.pool, TensorDataset) else None  # files decode to uint8
    check_pool(labels, task.num_classes, f"the {task.name} training pool", pixels)
    idx = balanced_subsample(labels, n, seed, num_classes=task.num_classes)
    return _take(pool, idx)


def _take(ds: Dataset, idx: np.ndarray) -> Dataset:
    if isinstance(ds, TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return TensorDataset(*(x[t] for x in ds.tensors))
    return Subset(ds, [int(i) for i in idx])


def holdout_split(task: Task, subset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a training subsample into (train part, held-out validation part), class-balanced."""
    labels = task.labels(subset)
    n = len(labels)
    classes = len(np.unique(labels))
    n_val = max(int(round(fraction * n)), min(n // 2, classes))
    n_val = min(max(n_val, 1), n - 1)
    val_idx = balanced_subsample(labels, n_val, seed + 1)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return _take(subset, train_idx), _take(subset, val_idx)


def tuning_data(task: Task, n: int, seed: int, validation: str = "task",
                holdout_fraction: float = 0.3) -> tuple[Dataset, Dataset]:
    """(training data, validation data) of the tuning fits at training size ``n``.

    ``validation="task"``: all ``n`` examples of a class-balanced subsample of ``task.tuning_pool`` train each
    grid point and the task's own validation split scores it (the fit sees n training examples, as in the
    evaluation; the validation images only select). ``"holdout"``: a subsample of ``n`` is cut into a training
    part and a held-out part (:func:`holdout_split`), so each grid point sees fewer than n examples and is
    scored on very few at small n.
    """
    if validation == "task":
        if task.val is None or task.tuning_pool is None:
            raise ValueError(f"tuning.validation: task needs a dataset with its own validation split; "
                             f"{task.name!r} has none here (use tuning.validation: holdout)")
        return training_subset(task, n, seed, pool=task.tuning_pool), task.val
    if validation == "holdout":
        return holdout_split(task, training_subset(task, n, seed), holdout_fraction, seed)
    raise ValueError(f"tuning.validation must be one of {VALIDATION_PROTOCOLS}, got {validation!r}")
