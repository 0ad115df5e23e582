"""resnet28, the Fashion-MNIST tier's backbone: torchvision's names and layout, its sizes, and that adding it
left small_resnet (the default's backbone) unchanged."""

import pytest
import torch

from bayes_transfer.models.resnets import (KNOWN_ARCHS, ResNet28, SmallResNet, build_model, load_backbone_state,
                                           split_named_parameters)


def test_names_are_torchvision_resnet18s_and_the_shapes_follow_the_docstring():
    torchvision = pytest.importorskip("torchvision")
    model = build_model("resnet28", 5)
    assert isinstance(model, ResNet28) and "resnet28" in KNOWN_ARCHS
    names = set(model.state_dict())
    assert names <= set(torchvision.models.resnet18().state_dict())
    assert {n.split(".")[0] for n in names} == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
    assert sum(p.numel() for p in model.parameters()) == 307_893
    assert model.feature_dim == 128 and model.conv1.stride == (2, 2)
    x = torch.randn(3, 1, 28, 28)
    maps = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        layer.register_forward_hook(lambda m, i, o: maps.append(o.shape[-1]))
    assert model(x).shape == (3, 5) and maps == [14, 7, 4, 2]
    assert model.features(x).shape == (3, 128)
    backbone, head = split_named_parameters(model)
    assert set(head) == {"fc.weight", "fc.bias"} and "layer4.0.bn2.weight" in backbone


def test_kwargs_and_their_checks():
    assert build_model("resnet28", 5, width=8, stem_stride=1).conv1.stride == (1, 1)
    assert build_model("resnet28", 5, width=8).feature_dim == 64
    with pytest.raises(ValueError, match="blocks must have 4 entries"):
        ResNet28(5, blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="stem_stride must be a positive int"):
        ResNet28(5, stem_stride=0)


def test_a_source_checkpoint_loads_into_a_downstream_model():
    torch.manual_seed(0)
    source = build_model("resnet28", 5)
    target = build_model("resnet28", 5)
    loaded = load_backbone_state(target, source.state_dict())
    assert "layer4.0.downsample.0.weight" in loaded and not [k for k in loaded if k.startswith("fc.")]
    assert torch.equal(target.layer4[0].conv2.weight, source.layer4[0].conv2.weight)


def test_small_resnet_is_unchanged():
    torch.manual_seed(0)
    model = build_model("small_resnet", 5)
    assert type(model) is SmallResNet and not hasattr(model, "layer4")
    assert sum(p.numel() for p in model.parameters()) == 77_429
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
