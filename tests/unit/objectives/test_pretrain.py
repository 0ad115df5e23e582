"""Source pre-training: ``pretrain.augment`` puts the source task's augmentation under the supervised loss."""

import pytest
import torch

from bayes_transfer.data.digits import augment, load_digits_tasks
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain

CFG = dict(steps=3, batch_size=16, log_every=1)


def _weights(cfg, augment_fn):
    data = load_digits_tasks(n_test=300, split_seed=0)
    model, objective, _ = pretrain("small_resnet", "supervised", data.source_train, 5, cfg, augment=augment_fn,
                                   seed=0)
    return objective, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_augment_off_ignores_the_augmentation_and_on_applies_it():
    plain_obj, plain = _weights(PretrainConfig(**CFG), None)
    off_obj, off = _weights(PretrainConfig(**CFG), augment)
    on_obj, on = _weights(PretrainConfig(**CFG, augment=True), augment)
    assert plain_obj.supervised_augment is None and off_obj.supervised_augment is None
    assert on_obj.supervised_augment is augment
    torch.testing.assert_close(off, plain, rtol=0, atol=0)  # off: the former pre-training, bit for bit
    assert not torch.equal(on, plain)  # on: other inputs, other weights


def test_augment_without_an_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match="pretrain.augment is true"):
        _weights(PretrainConfig(**CFG, augment=True), None)
