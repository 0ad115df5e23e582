"""Fashion-MNIST through the pipeline's data dispatch (bayes_transfer.stages.task.load_task and
bayes_transfer.data.registry), on tiny idx files written in the real format (tests/fashion_files.py)."""

import numpy as np
import pytest
import torch

from bayes_transfer.config.check import config_problems, pool_size
from bayes_transfer.data import fashion_mnist as fm
from bayes_transfer.data.registry import EMBEDDED_DATASETS, FASHION_POOL_SIZE, embedded_problems, is_embedded
from bayes_transfer.stages.task import load_task, source_train_set, training_subset, tuning_data
from fashion_files import write_fashion_mnist

PER_TRAIN, PER_TEST, N_VAL = 40, 8, 20


@pytest.fixture
def data_cfg(tmp_path):
    write_fashion_mnist(tmp_path / "fmnist", PER_TRAIN, PER_TEST)
    return {"dataset": "fashion_mnist", "root": str(tmp_path / "unused"), "fashion_mnist_dir": str(tmp_path / "fmnist"),
            "image_size": 28, "n_val": N_VAL, "split_seed": 0, "shift_strength": 1.0}


def test_load_task_has_the_digits_shape(data_cfg):
    task = load_task(data_cfg)
    assert task.name == "fashion_mnist" and task.num_classes == 5 and task.source_classes == 5
    assert task.metric == "accuracy" and task.augment is fm.augment
    assert source_train_set(task, data_cfg) is task.source_train
    assert len(task.source_train) == 5 * PER_TRAIN and set(task.labels(task.source_train)) == set(range(5))
    # the validation split scores the tuning fits and joins the evaluation pool; the tuning pool excludes it
    assert len(task.val) == N_VAL and len(task.tuning_pool) == 5 * PER_TRAIN - N_VAL
    assert len(task.pool) == 5 * PER_TRAIN
    assert torch.equal(task.pool.tensors[0][-N_VAL:], task.val.tensors[0])
    assert set(task.eval_sets()) == {"test", "shifted_test", "ood_source", "ood_noise"}
    assert len(task.test) == 5 * PER_TEST and len(task.ood["ood_noise"]) == len(task.test)
    assert set(load_task(data_cfg | {"ood": False}).eval_sets()) == {"test", "shifted_test"}
    few = load_task(data_cfg | {"n_ood": 3}).ood
    assert len(few["ood_source"]) == 3 and len(few["ood_noise"]) == 3
    assert task.test.tensors[0].shape[1:] == (1, 28, 28)
    assert not torch.equal(task.test.tensors[0], task.shifted_test.tensors[0])
    assert torch.equal(task.test.tensors[1], task.shifted_test.tensors[1])


def test_subsamples_are_class_balanced_and_tuning_never_sees_validation_images(data_cfg):
    task = load_task(data_cfg)
    sub = training_subset(task, 10, seed=3)
    assert np.bincount(task.labels(sub), minlength=5).tolist() == [2] * 5
    train, val = tuning_data(task, 10, seed=1000, validation="task")
    assert val is task.val
    val_rows = {tuple(r) for r in task.val.tensors[0].flatten(1)[:, ::37].tolist()}
    assert not val_rows & {tuple(r) for r in train.tensors[0].flatten(1)[:, ::37].tolist()}


def test_image_size_14_pools_the_images(data_cfg):
    task = load_task(data_cfg | {"image_size": 14})
    assert task.source_train.tensors[0].shape[1:] == (1, 14, 14) and task.shifted_test.tensors[0].shape[-1] == 14


def test_missing_files_name_every_expected_path(tmp_path):
    empty = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError) as err:
        load_task({"dataset": "fashion_mnist", "fashion_mnist_dir": str(empty), "image_size": 28})
    msg = str(err.value)
    for name in fm.FILES.values():
        assert f"{empty / name}  or  {empty / name}.gz   [MISSING]" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg


def test_registry_and_config_checks(data_cfg, tmp_path):
    assert EMBEDDED_DATASETS == ("digits", "fashion_mnist")
    assert is_embedded("fashion_mnist") and is_embedded("digits") and not is_embedded("cifar10")
    # the pool of the fake files (their labels file), else the real file's 30,000 (a dry run needs no data)
    assert pool_size(data_cfg) == 5 * PER_TRAIN
    assert pool_size(data_cfg | {"fashion_mnist_dir": str(tmp_path / "nothing")}) == FASHION_POOL_SIZE == 30000
    assert embedded_problems(data_cfg) == []
    assert embedded_problems(data_cfg | {"image_size": 224}) == [
        "data.image_size: Fashion-MNIST is read at 28 or 14 px; expected one of [28, 14], got 224"]


def test_the_fashion_config_is_checked_against_the_pool_of_its_files(data_cfg):
    import yaml

    from bayes_transfer.config.experiments import merged
    from bayes_transfer.config.schema import SCHEMA_PATH, prepare_config

    root = SCHEMA_PATH.parents[2]
    cfg = merged(yaml.safe_load((root / "config.yaml").read_text()),
                 yaml.safe_load((root / "configs" / "fashion.yaml").read_text()))
    small = {"data": {"fashion_mnist_dir": data_cfg["fashion_mnist_dir"]}, "sizes": [10, 30],
             "ablations": {"n_train": 10, "landscape": {"n_train": 100}}}
    cfg = prepare_config(merged(cfg, small))  # raises on any problem
    cfg["sizes"] = [10, 500]
    assert "sizes[1]: training size 500 is larger than the training pool of fashion_mnist (200 examples)" in \
        config_problems(cfg)
