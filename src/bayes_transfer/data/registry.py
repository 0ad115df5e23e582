"""The one place that says which datasets are *embedded* (their source task ships with them) and their checks.

An embedded dataset holds both tasks of the protocol, so the workflow pre-trains the source checkpoints and
learns the SWAG prior here (rules ``pretrain`` and ``learn_prior``): the digits (bundled with scikit-learn, the
default) and Fashion-MNIST (classes 0-4 the source task, 5-9 the downstream task; the evidence tier,
``configs/fashion.yaml``). Every other dataset is paper scale: the source task is ImageNet, whose checkpoints are
fetched and whose priors are imported or learned on ImageNet's files. :func:`is_embedded` is what the workflow
(``PAPER_SCALE``) and the config checks ask; :func:`embedded_pool_size` and :func:`embedded_problems` are the
config checks of an embedded dataset (:mod:`bayes_transfer.config.check`). The data themselves are read by
:func:`bayes_transfer.stages.task.load_task`.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["EMBEDDED_DATASETS", "FASHION_POOL_SIZE", "is_embedded", "embedded_pool_size", "embedded_problems"]

#: datasets whose source task is part of them (pre-training and SWAG run here)
EMBEDDED_DATASETS = ("digits", "fashion_mnist")
#: downstream training images (classes 5-9) of the real Fashion-MNIST train file: the training pool plus the
#: validation split, as :func:`~bayes_transfer.stages.task.load_task` joins them for the evaluation fits
FASHION_POOL_SIZE = 30000


def is_embedded(name: str) -> bool:
    """True for a dataset of :data:`EMBEDDED_DATASETS` (source checkpoints and priors are trained here)."""
    return name in EMBEDDED_DATASETS


def embedded_pool_size(data_cfg: Mapping) -> int:
    """Training-pool size of an embedded dataset (pool plus validation split, the evaluation fits' pool).

    Fashion-MNIST: the downstream images of the train labels file when the files are there (read from the
    labels file only), else :data:`FASHION_POOL_SIZE`, the real file's count (a dry run needs no data; a job
    then fails with the list of expected paths).
    """
    name = data_cfg["dataset"]
    if name == "digits":
        from bayes_transfer.data.digits import load_digits_tasks

        d = load_digits_tasks(split_seed=data_cfg["split_seed"], n_test=data_cfg["n_test"], n_val=data_cfg["n_val"],
                              shift_strength=data_cfg["shift_strength"])
        return len(d.pool) + len(d.val)
    if name == "fashion_mnist":
        from bayes_transfer.data import fashion_mnist as fm

        try:
            found = fm.locate_files(data_cfg.get("root"), data_cfg.get("fashion_mnist_dir"))
        except FileNotFoundError:
            return FASHION_POOL_SIZE
        labels = fm.read_idx(found["train_labels"], "labels")
        return int((labels >= fm.SOURCE_CLASSES).sum())
    raise ValueError(f"data.dataset: {name!r} is not an embedded dataset (expected one of {EMBEDDED_DATASETS})")


def embedded_problems(data_cfg: Mapping) -> list[str]:
    """Problems of the ``data`` section for an embedded dataset that its schema cannot express (one line each)."""
    name = data_cfg["dataset"]
    problems: list[str] = []
    if name == "fashion_mnist":
        from bayes_transfer.data.fashion_mnist import IMAGE_SIZES

        if data_cfg.get("image_size") not in IMAGE_SIZES:
            problems.append(f"data.image_size: Fashion-MNIST is read at {' or '.join(map(str, IMAGE_SIZES))} px; "
                            f"expected one of {list(IMAGE_SIZES)}, got {data_cfg.get('image_size')!r}")
    return problems
