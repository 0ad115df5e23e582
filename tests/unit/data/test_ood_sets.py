"""The embedded tiers' OOD sets: the source classes' held-out test images and seeded uniform noise."""

import torch

from bayes_transfer.data.digits import load_digits_tasks
from bayes_transfer.stages.task import OOD_SETS, load_task

DIGITS = {"dataset": "digits", "split_seed": 0, "n_test": 300, "n_val": 150, "shift_strength": 1.0}


def test_digits_ood_sets_are_the_source_test_images_and_noise_over_the_test_range():
    task = load_task(DIGITS)
    assert tuple(task.ood) == OOD_SETS and set(task.eval_sets()) == {"test", "shifted_test", *OOD_SETS}
    source_test = load_digits_tasks(0, 300, 150, 1.0).source_test
    near, far = task.ood["ood_source"], task.ood["ood_noise"]
    assert torch.equal(near.tensors[0], source_test.tensors[0])  # digits 0-4, never seen downstream
    x = task.test.tensors[0]
    assert far.tensors[0].shape == x.shape
    assert x.min() <= far.tensors[0].min() and far.tensors[0].max() <= x.max()
    assert (near.tensors[1] == -1).all() and (far.tensors[1] == -1).all()  # no downstream class
    # fixed by the tier, not by a run: the same images every time
    assert torch.equal(load_task(DIGITS).ood["ood_noise"].tensors[0], far.tensors[0])


def test_ood_off_leaves_test_and_shifted_test():
    assert set(load_task(DIGITS | {"ood": False}).eval_sets()) == {"test", "shifted_test"}
