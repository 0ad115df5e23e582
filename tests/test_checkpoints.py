"""Tests for bayes_transfer.checkpoints (offline: nothing is ever downloaded)."""

from __future__ import annotations

import os
import re
import urllib.error
from collections import OrderedDict

import numpy as np
import pytest
import torch

from bayes_transfer.checkpoints import (
    load_checkpoint_metadata,
    load_checkpoint_state,
    normalize_state_keys,
    save_backbone_checkpoint,
    torchvision_imagenet_state,
)
from bayes_transfer.models import build_model, load_backbone_state

pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def source():
    """A randomly initialised ResNet-50 with non-trivial BatchNorm buffers."""
    torch.manual_seed(0)
    model = build_model("resnet50", 10)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def _target():
    torch.manual_seed(1)
    return build_model("resnet50", 10)


SPOT_KEYS = ("conv1.weight", "layer2.1.bn2.running_mean", "layer4.2.bn3.num_batches_tracked")


@pytest.fixture
def fresh(_target):
    """One ResNet-50 shared by the tests (building one takes ~1 s on a slow CPU).

    A few tensors are overwritten with NaN / -1 before each use (wiping all of them costs
    another 0.5 s); that every other key gets loaded is checked through the key list that
    ``load_backbone_state`` returns.
    """
    with torch.no_grad():
        own = _target.state_dict()
        for key in SPOT_KEYS:
            own[key].fill_(float("nan") if own[key].is_floating_point() else -1)
    return _target


def _assert_backbone_equal(model, reference, loaded=None):
    ref = reference.state_dict()
    if loaded is not None:
        assert sorted(loaded) == sorted(k for k in ref if not k.startswith("fc."))
    for name, value in model.state_dict().items():
        if name.startswith("fc."):
            continue
        assert torch.equal(value, ref[name]), name


def _prefixed(state, prefix):
    return OrderedDict((prefix + k, v) for k, v in state.items())


FORMS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "resnet": lambda sd: {"resnet": sd, "head": {"0.weight": torch.zeros(2, 2)}},
    "model": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}},
    "module_plain": lambda sd: _prefixed(sd, "module."),
    "module_state_dict": lambda sd: {"state_dict": _prefixed(sd, "module.")},
    "encoder_with_projection": lambda sd: {
        "state_dict": {
            **_prefixed(sd, "module.encoder."),
            "module.projection.0.weight": torch.zeros(3, 2048),
        }
    },
    "backbone": lambda sd: {"model": _prefixed(sd, "backbone.")},
}


@pytest.mark.parametrize("form", list(FORMS))
def test_load_checkpoint_forms_into_fresh_model(tmp_path, source, fresh, form):
    path = tmp_path / f"{form}.pth"
    torch.save(FORMS[form](source.state_dict()), path)
    state = load_checkpoint_state(path)
    assert set(state) == set(source.state_dict())  # torchvision layout, nothing extra
    loaded = load_backbone_state(fresh, state)
    _assert_backbone_equal(fresh, source, loaded)


def test_save_backbone_checkpoint_roundtrip(tmp_path, source, fresh):
    wrapped = torch.nn.DataParallel(source)  # keys get "module." on the CPU too
    assert next(iter(wrapped.state_dict())).startswith("module.")
    path = tmp_path / "sub" / "dir" / "ckpt.pth"
    meta = {"arch": "resnet50", "epochs": np.int64(5), "lr": np.float32(0.5), "tags": ("a", 1)}
    assert save_backbone_checkpoint(wrapped, path, meta) == path
    assert os.listdir(path.parent) == ["ckpt.pth"]  # no temporary file left behind
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "metadata"}
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    got = load_checkpoint_metadata(path)
    assert got == {"arch": "resnet50", "epochs": 5, "lr": 0.5, "tags": ("a", 1)}
    assert type(got["epochs"]) is int
    loaded = load_backbone_state(fresh, load_checkpoint_state(path))
    _assert_backbone_equal(fresh, source, loaded)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"old")
    model = build_model("small_resnet", 3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_backbone_checkpoint(model, path, {})
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.pth"]


def test_save_rejects_bad_metadata(tmp_path):
    model = build_model("small_resnet", 3)
    with pytest.raises(TypeError, match=r"metadata\['bad'\] has type object"):
        save_backbone_checkpoint(model, tmp_path / "x.pth", {"bad": object()})
    assert not (tmp_path / "x.pth").exists()


def test_no_tensors_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3, "state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"empty\.pth.*no tensors"):
        load_checkpoint_state(path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint_state(tmp_path / "nope.pth")


def test_untrusted_pickle_needs_weights_only_false(tmp_path):
    import argparse

    model = build_model("small_resnet", 3)
    path = tmp_path / "reference_script.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match=r"(?s)reference_script\.pth.*weights_only=False"):
        load_checkpoint_state(path)
    state = load_checkpoint_state(path, weights_only=False)
    assert set(state) == set(model.state_dict())


def test_normalize_keeps_unprefixed_and_peels_nested_wrappers():
    t = torch.zeros(1)
    plain = {"conv1.weight": t, "encoder.extra": t, "fc.weight": t}
    assert set(normalize_state_keys(plain)) == set(plain)  # backbone keys already unprefixed
    nested = {"module.model.encoder.conv1.weight": t, "module.model.encoder.layer1.0.bn1.bias": t}
    assert set(normalize_state_keys(nested)) == {"conv1.weight", "layer1.0.bn1.bias"}
    moco = {"encoder_q.conv1.weight": t, "encoder_k.conv1.weight": t, "queue": t}
    assert set(normalize_state_keys(moco)) == {"conv1.weight"}


# --------------------------------------------------------------------------- torchvision weights
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """TORCH_HOME in tmp_path and any download attempt failing at once, as on an offline box."""
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


@pytest.mark.parametrize(
    "arch, weights, file_name",
    [
        ("resnet50", "DEFAULT", "resnet50-11ad3fa6.pth"),  # DEFAULT is IMAGENET1K_V2
        ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth"),
        ("resnet101", "DEFAULT", "resnet101-cd907fc2.pth"),
    ],
)
def test_missing_imagenet_weights_error(offline, tmp_path, arch, weights, file_name):
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).verify(weights).url
    assert url.endswith(file_name)
    with pytest.raises(RuntimeError) as info:
        torchvision_imagenet_state(arch, weights)
    msg = str(info.value)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / file_name
    assert "TORCH_HOME" in msg and str(expected) in msg and url in msg
    assert offline == [url]  # exactly one (failed) download attempt


def test_torch_home_argument_and_cached_file_is_used(offline, tmp_path):
    home = tmp_path / "elsewhere"
    expected = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(RuntimeError, match=re.escape(str(expected))):
        torchvision_imagenet_state("resnet18", "IMAGENET1K_V1", torch_home=home)
    # a file placed by hand at the expected path is loaded without any download
    torch.manual_seed(2)
    reference = build_model("resnet18", 1000)
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    n_calls = len(offline)
    state = torchvision_imagenet_state("resnet18", "IMAGENET1K_V1", torch_home=home)
    assert len(offline) == n_calls
    fresh = build_model("resnet18", 7)
    loaded = load_backbone_state(fresh, state)
    _assert_backbone_equal(fresh, reference, loaded)


def test_corrupt_cached_file_is_reported(offline, tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="exists but could not be read"):
        torchvision_imagenet_state("resnet18", "IMAGENET1K_V1")


def test_bad_arch_or_weights():
    with pytest.raises(ValueError, match="unknown arch 'vgg16'"):
        torchvision_imagenet_state("vgg16")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        torchvision_imagenet_state("resnet50", "IMAGENET9K")
