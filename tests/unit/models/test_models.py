"""Tests for bayes_transfer.models.resnets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayes_transfer.models.resnets import (
    HEAD_PREFIX,
    SmallResNet,
    build_model,
    extract_features,
    load_backbone_state,
    replace_head,
    split_named_parameters,
)


def small(num_classes: int = 5, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_resnet", num_classes, **kwargs)


def test_small_resnet_parameter_count_and_names():
    model = small()
    assert sum(p.numel() for p in model.parameters()) == 77_429
    names = [n for n, _ in model.named_parameters()]
    for expected in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.bias",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer3.0.downsample.1.bias",
        "fc.weight",
        "fc.bias",
    ]:
        assert expected in names
    assert not any(n.startswith("layer1.0.downsample") for n in names)
    assert names[-2:] == ["fc.weight", "fc.bias"]


def test_small_resnet_shapes_and_features():
    model = small().eval()
    assert model.feature_dim == 64
    x = torch.randn(4, 1, 8, 8)
    sizes = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:]))
        )
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (4, 64)
    assert logits.shape == (4, 5)
    assert sizes == {"layer1": (8, 8), "layer2": (4, 4), "layer3": (2, 2)}
    assert torch.allclose(model.fc(feats), logits)
    assert torch.equal(extract_features(model, x), feats)


def test_small_resnet_options_and_errors():
    model = small(num_classes=3, in_channels=3, width=8, blocks=(2, 1, 1))
    assert model.feature_dim == 32
    assert "layer1.1.conv1.weight" in dict(model.named_parameters())
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        SmallResNet(0)
    with pytest.raises(ValueError, match="blocks"):
        SmallResNet(5, blocks=(1, 1))


def test_init_is_deterministic_under_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    for (na, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert torch.equal(pa, pb), na
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_split_named_parameters():
    model = small()
    backbone, head = split_named_parameters(model)
    assert list(head) == ["fc.weight", "fc.bias"]
    assert all(not n.startswith(HEAD_PREFIX) for n in backbone)
    for bn_name in ("bn1.weight", "bn1.bias", "layer2.0.bn2.weight", "layer3.0.downsample.1.bias"):
        assert bn_name in backbone
    buffers = {n for n, _ in model.named_buffers()}
    assert buffers and not (buffers & (set(backbone) | set(head)))
    assert list(backbone) + list(head) == [n for n, _ in model.named_parameters()]
    assert backbone["conv1.weight"] is model.conv1.weight


def test_build_model_resnet50_keeps_torchvision_names():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = build_model("resnet50", 7).eval()
    assert isinstance(model, torchvision.models.ResNet)
    reference = torchvision.models.resnet50(weights=None, num_classes=7)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.feature_dim == 2048
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (2, 2048)
    assert logits.shape == (2, 7)
    assert torch.allclose(model.fc(feats), logits, atol=1e-5)
    backbone, head = split_named_parameters(model)
    assert list(head) == ["fc.weight", "fc.bias"]
    assert "layer1.0.downsample.1.weight" in backbone


def test_build_model_unknown_arch():
    with pytest.raises(ValueError, match="small_resnet.*resnet18.*resnet50.*resnet101"):
        build_model("vgg16", 10)


def test_replace_head_deterministic_and_keeps_backbone():
    model = small()
    before = {n: p.detach().clone() for n, p in split_named_parameters(model)[0].items()}
    torch.manual_seed(11)
    replace_head(model, 3)
    w1 = model.fc.weight.detach().clone()
    torch.manual_seed(11)
    replace_head(model, 3)
    assert model.fc.weight.shape == (3, 64)
    assert torch.equal(model.fc.weight, w1)
    for n, p in split_named_parameters(model)[0].items():
        assert torch.equal(p, before[n])
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(model, -1)


def test_load_backbone_state_copies_backbone_and_keeps_head():
    source = small(num_classes=5, seed=1)
    source.bn1.running_mean.fill_(0.5)
    target = small(num_classes=3, seed=2)
    head_before = target.fc.weight.detach().clone()
    loaded = load_backbone_state(target, source.state_dict())
    assert "bn1.running_mean" in loaded and "fc.weight" not in loaded
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(target.state_dict()[name], value), name
    assert torch.equal(target.fc.weight, head_before)


def test_load_backbone_state_strips_module_prefix():
    source = small(seed=1)
    target = small(seed=2)
    wrapped = {"module." + k: v for k, v in source.state_dict().items()}
    load_backbone_state(target, wrapped)
    assert torch.equal(target.layer3[0].conv2.weight, source.layer3[0].conv2.weight)


def test_load_backbone_state_shape_mismatch_names_first_key():
    narrow = small(width=8)
    target = small(width=16)
    with pytest.raises(ValueError) as info:
        load_backbone_state(target, narrow.state_dict())
    message = str(info.value)
    assert "'conv1.weight'" in message
    assert "(8, 1, 3, 3)" in message and "(16, 1, 3, 3)" in message


def test_load_backbone_state_missing_key_and_extras():
    source = small(seed=1)
    target = small(seed=2)
    original = target.conv1.weight.detach().clone()
    state = dict(source.state_dict())
    del state["layer2.0.bn1.running_var"]
    del state["layer3.0.conv1.weight"]
    with pytest.raises(ValueError, match=r"'layer2\.0\.bn1\.running_var'.*missing"):
        load_backbone_state(target, state)
    assert torch.equal(target.conv1.weight, original)  # nothing loaded on failure

    state = dict(source.state_dict())
    state["layer9.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="layer9.weight"):
        load_backbone_state(target, state)
    load_backbone_state(target, state, strict_backbone=False)
    assert torch.equal(target.conv1.weight, source.conv1.weight)


def test_load_backbone_state_allows_missing_batch_counter():
    source = small(seed=1)
    target = small(seed=2)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_backbone_state(target, state)
    assert torch.equal(target.bn1.weight, source.bn1.weight)
