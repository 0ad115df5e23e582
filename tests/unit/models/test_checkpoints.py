"""Tests for bayes_transfer.models.checkpoints (offline: nothing is ever downloaded)."""

from __future__ import annotations

import os
import re
import urllib.error
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from bayes_transfer.models.checkpoints import (
    load_checkpoint_metadata,
    load_checkpoint_state,
    normalize_state_keys,
    save_backbone_checkpoint,
    torchvision_imagenet_state,
)
from bayes_transfer.models.resnets import build_model, load_backbone_state

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


# --------------------------------------------------------------------------- the paper's source checkpoints
def test_fetch_supervised_weights_from_torch_home(offline, tmp_path, source):
    """The rule fetch_weights: torchvision's file in TORCH_HOME is used (no download) and checked."""
    from bayes_transfer.models.checkpoints import fetch_source_weights, load_source_weights

    home = tmp_path / "th"
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = source.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # ImageNet head
    torch.save(state, cache / "resnet50-0676ba61.pth")  # IMAGENET1K_V1's file name
    cfg = {"torch_home": str(home), "torchvision_weights": "IMAGENET1K_V1"}
    manifest = fetch_source_weights("resnet50", "supervised", cfg, root=tmp_path)
    assert offline == []  # nothing downloaded
    assert manifest["path"] == str((cache / "resnet50-0676ba61.pth").resolve())
    assert manifest["backbone_tensors"] == len([k for k in state if not k.startswith("fc.")])
    loaded = load_source_weights(manifest, "resnet50")
    assert torch.equal(loaded["layer3.2.conv2.weight"], state["layer3.2.conv2.weight"])
    with pytest.raises(ValueError, match="manifest is for 'resnet50'"):
        load_source_weights(manifest, "resnet101")
    # without the file and without network: the error names the file and the URL
    with pytest.raises(RuntimeError, match=r"resnet101-63fe2227\.pth"):
        fetch_source_weights("resnet101", "supervised", cfg, root=tmp_path)


@pytest.mark.parametrize("form", ["state_dict", "resnet", "module_state_dict"])
def test_fetch_simclr_converted_checkpoint(tmp_path, source, fresh, form):
    from bayes_transfer.models.checkpoints import fetch_source_weights, load_source_weights

    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}  # SimCLR has no fc
    path = tmp_path / "checkpoints" / "simclr_resnet50_1x.pth"
    path.parent.mkdir()
    torch.save(FORMS[form](backbone), path)
    cfg = {"simclr": {"resnet50": "{root}/checkpoints/simclr_resnet50_1x.pth"}}
    manifest = fetch_source_weights("resnet50", "simclr", cfg, root=tmp_path)
    assert manifest["path"] == str(path.resolve()) and manifest["pretraining"] == "simclr"
    loaded = load_backbone_state(fresh, load_source_weights(manifest, "resnet50"))
    _assert_backbone_equal(fresh, source, loaded)


def test_fetch_simclr_missing_or_wrong_file(tmp_path):
    from bayes_transfer.models.checkpoints import fetch_source_weights

    cfg = {"simclr": {"resnet50": str(tmp_path / "nope.pth")}}
    with pytest.raises(FileNotFoundError, match=r"(?s)nope\.pth.*checkpoints\.simclr\.resnet50.*simclr-converter"):
        fetch_source_weights("resnet50", "simclr", cfg)
    with pytest.raises(ValueError, match="no file for 'resnet101'"):
        fetch_source_weights("resnet101", "simclr", cfg)
    small = tmp_path / "small.pth"
    torch.save({"state_dict": build_model("resnet18", 10).state_dict()}, small)
    with pytest.raises(ValueError, match=r"small\.pth is not a resnet50 checkpoint"):
        fetch_source_weights("resnet50", "simclr", {"simclr": {"resnet50": str(small)}})


def test_import_released_prior_through_the_core_library(tmp_path):
    """The authors' four priorBox files -> this library's prior file, checked against the checkpoint."""
    from bayes_transfer.io import save_torch
    from bayes_transfer.stages.source import import_prior_stage
    from bayes_transfer.models.resnets import split_named_parameters
    from bayes_transfer.priors.gaussian import GaussianPrior

    torch.manual_seed(3)
    model = build_model("resnet18", 1000)
    ckpt = tmp_path / "pretrain" / "supervised.pt"
    save_torch({"state_dict": model.state_dict(), "objective": {}, "metadata": {}}, ckpt)
    backbone, _ = split_named_parameters(model)
    names = list(backbone)
    d = sum(p.numel() for p in backbone.values())
    mean = torch.cat([p.detach().reshape(-1) for p in backbone.values()])
    variance = torch.full((d,), 0.25)
    covmat = torch.randn(2, d, generator=torch.Generator().manual_seed(0)) * 0.1
    prefix = tmp_path / "priors" / "resnet18_supervised"
    prefix.parent.mkdir()
    torch.save(mean, f"{prefix}_mean.pt")
    torch.save(variance, f"{prefix}_variance.pt")
    torch.save(covmat, f"{prefix}_covmat.pt")
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, f"{prefix}_model.pt")
    out = tmp_path / "priors.pt"
    import_prior_stage("supervised", str(ckpt), str(prefix), {"arch": "resnet18"}, str(out))
    prior = GaussianPrior.load(out)
    assert prior.names == names and prior.rank == 2
    assert torch.equal(prior.mean, mean) and torch.equal(prior.variance, variance)
    assert torch.equal(prior.factor, covmat)
    assert prior.metadata["source"] == "priorbox" and prior.metadata["arch"] == "resnet18"
    # a prior of another architecture is refused before any training job
    with pytest.raises(ValueError):
        import_prior_stage("supervised", str(ckpt), str(prefix), {"arch": "resnet50"}, str(tmp_path / "x.pt"))
    Path(f"{prefix}_covmat.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)MISSING .*resnet18_supervised_covmat\.pt.*prior\.source: swag"):
        import_prior_stage("supervised", str(ckpt), str(prefix), {"arch": "resnet18"}, str(tmp_path / "y.pt"))
