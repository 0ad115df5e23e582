"""Every stage of the paper-scale code path, two training steps each, on tiny data in the real formats (CPU).

Data check -> weight fetch -> checkpoint conversion -> SWAG prior on (a tiny) ImageNet -> tuning -> fits, through
the same stage functions the workflow's rules call, with the paper config's data section at 32 px and ResNet-18
(ResNet-50's code path with a quarter of its parameters). The released-prior import is tested in
test_checkpoints.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from bayes_transfer.io import write_json
from bayes_transfer.stages import experiment, source
from bayes_transfer.stages.task import load_task, training_subset
from bayes_transfer.models.checkpoints import fetch_source_weights
from bayes_transfer.data.paper import prepare_dataset
from bayes_transfer.device import RuntimeOptions, runtime_options
from bayes_transfer.models.resnets import build_model
from bayes_transfer.priors.gaussian import GaussianPrior
from paper_files import presence_only_md5, write_cifar10, write_cifar101, write_imagenet_train

pytest.importorskip("torchvision")

SIZE = 32
METHODS = ("sgd_transfer", "sgd_learned_prior", "bnn_learned_prior", "bnn_isotropic_prior", "sgd_ensemble")
TRAIN = {"steps": 2, "batch_size": 4, "lr": 0.01, "cycles": 1, "samples_per_cycle": 1, "ensemble_size": 2,
         "prior_scale": 1.0e+4, "temperature": 1.0e-4, "log_every": 1}


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    """data root with CIFAR-10 (+ CIFAR-10.1), a tiny ImageNet, torchvision's cache and a SimCLR file."""
    root = tmp_path_factory.mktemp("paper")
    write_cifar10(root, per_batch=10, n_test=20)
    write_cifar101(root / "cifar10.1", n=12)
    write_imagenet_train(root, classes=3, per_class=4)
    torch.manual_seed(0)
    supervised = build_model("resnet18", 1000)
    cache = root / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(supervised.state_dict(), cache / "resnet18-f37072fd.pth")  # torchvision's IMAGENET1K_V1 name
    simclr = build_model("resnet18", 1000)
    (root / "checkpoints").mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in simclr.state_dict().items() if not k.startswith("fc.")}},
               root / "checkpoints" / "simclr_resnet18.pth")
    return root


@pytest.fixture
def no_md5(monkeypatch):
    presence_only_md5(monkeypatch)


@pytest.mark.slow  # ~20 s on a 2-core CPU
def test_every_paper_stage_runs_two_steps(paper_root, tmp_path, no_md5):
    torch.set_num_threads(1)
    data_cfg = {"dataset": "cifar10", "root": str(paper_root), "image_size": SIZE, "shifted_test": "cifar10.1"}
    model_cfg = {"arch": "resnet18"}
    res = tmp_path / "results"

    # rule prepare_data
    manifest = prepare_dataset("cifar10", paper_root, shifted_test="cifar10.1")
    assert manifest["pool_size"] == 50 and manifest["shifted_test"]["size"] == 12

    priors = {}
    for pretraining in ("supervised", "simclr"):
        # rule fetch_weights
        weights = fetch_source_weights("resnet18", pretraining, {
            "torch_home": str(paper_root / "torch_home"), "torchvision_weights": "IMAGENET1K_V1",
            "simclr": {"resnet18": "{root}/checkpoints/simclr_resnet18.pth"}}, root=paper_root)
        write_json(res / "weights" / f"{pretraining}.json", weights)
        # rule pretrain (paper scale: conversion)
        ckpt = res / "pretrain" / f"{pretraining}.pt"
        meta = source.convert_stage(pretraining, str(res / "weights" / f"{pretraining}.json"), model_cfg,
                                        str(ckpt))
        assert meta["source_task"] == "imagenet"
        state = source.load_pretrained(str(ckpt))["state_dict"]
        reference = torch.load(weights["path"], weights_only=True)
        reference = {k.removeprefix("module."): v for k, v in reference.get("state_dict", reference).items()}
        assert torch.equal(state["layer4.1.conv2.weight"], reference["layer4.1.conv2.weight"])
        # rule learn_prior (prior.source swag): 3 cycles of 2 steps (the first is burn-in) on the source task, ImageNet
        swag = {"cycles": 3, "steps_per_cycle": 2, "batch_size": 4, "max_rank": 2, "lr": 0.01}
        prior = source.prior_stage(pretraining, str(ckpt), data_cfg, model_cfg, swag,
                                       str(res / "priors" / f"{pretraining}.pt"))
        assert prior.metadata["source_task"] == "imagenet" and prior.metadata["n_snapshots"] == 2
        assert prior.names[0] == "conv1.weight" and not any(n.startswith("fc.") for n in prior.names)
        priors[pretraining] = res / "priors" / f"{pretraining}.pt"

    # rules tune and fit, supervised prior, every method of the tables
    ckpt = str(res / "pretrain" / "supervised.pt")
    tuned = experiment.tune_stage("bnn_learned_prior", [10], "supervised", checkpoint=ckpt,
                                  prior_path=str(priors["supervised"]), data_cfg=data_cfg, model_cfg=model_cfg,
                                  train_cfg=TRAIN, grid={"temperature": [1e-4, 1e-2]}, tuning_cfg={"seed": 1000},
                                  outs=[str(res / "tuning" / "n10.json")])
    assert [r["success"] for r in tuned[0]["grid"]] == [True, True] and tuned[0]["metric"] == "accuracy"
    for method in METHODS:
        prior_path = str(priors["supervised"]) if "learned" in method else None
        tuning = str(res / "tuning" / "n10.json") if method == "bnn_learned_prior" else None
        outs = [str(res / "runs" / method / "seed0.json")]
        (record,) = experiment.fit_stage(method, 10, "supervised", [0], checkpoint=ckpt, prior_path=prior_path,
                                         tuning_path=tuning, data_cfg=data_cfg, model_cfg=model_cfg,
                                         train_cfg=TRAIN, outs=outs)
        assert record["success"], (method, record["reason"])
        assert set(record["metrics"]) == {"test", "shifted_test"}
        assert record["diagnostics"]["steps_run"] == (4 if method == "sgd_ensemble" else 2)
        assert json.loads((res / "runs" / method / "seed0.json").read_text())["method"] == method


def test_runtime_options_off_on_cpu_and_bf16_channels_last_path_runs(paper_root, no_md5):
    """GPU options are off on the CPU by default; requested explicitly, the same code path runs on the CPU."""
    from bayes_transfer.inference.methods import downstream_model
    from bayes_transfer.inference.loop import Hyper, fit

    opts = runtime_options("cpu")
    assert opts == RuntimeOptions(autocast=None, channels_last=False, num_workers=0, pin_memory=False)
    with pytest.raises(ValueError, match="autocast"):
        runtime_options("cpu", autocast="fp8")
    gpu_like = runtime_options("cpu", autocast="bf16", channels_last=True, num_workers=0)
    assert gpu_like.autocast is torch.bfloat16 and gpu_like.channels_last

    torch.set_num_threads(1)
    task = load_task({"dataset": "cifar10", "root": str(paper_root), "image_size": SIZE})
    train = training_subset(task, 10, seed=0)
    model = downstream_model("resnet18", build_model("resnet18", 1000).state_dict(), 10, seed=0)
    from bayes_transfer.models.resnets import split_named_parameters

    backbone, _ = split_named_parameters(model)
    iso = GaussianPrior.isotropic(backbone, 1.0, centred_at_params=True)
    factor = 0.01 * torch.randn(1, iso.dim, generator=torch.Generator().manual_seed(0))
    prior = GaussianPrior(iso.mean, iso.variance, factor, iso.names, iso.shapes, {})  # with a low-rank part
    result = fit(model, train, inference="sghmc", hp=Hyper(steps=2, batch_size=4, cycles=1, samples_per_cycle=1),
                 eval_sets={"test": task.test}, backbone_prior=prior, runtime=gpu_like)
    assert result.success, result.reason
    assert result.probs["test"].shape == (20, 10) and result.probs["test"].dtype == torch.float64
    assert torch.allclose(result.probs["test"].sum(-1), torch.ones(20, dtype=torch.float64))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_prior_gradient_of_channels_last_parameters_equals_contiguous():
    """BoundPrior.add_grad_ on NHWC convolution weights (channels-last training) gives the same gradient."""
    torch.manual_seed(0)
    conv = {"w": torch.nn.Parameter(torch.randn(4, 3, 3, 3)), "b": torch.nn.Parameter(torch.randn(4))}
    prior = GaussianPrior(torch.zeros(112), torch.full((112,), 0.5), 0.3 * torch.randn(2, 112), ["w", "b"],
                          [(4, 3, 3, 3), (4,)], {})
    prior.bind(conv).add_grad_(0.1)
    expected = {k: p.grad.clone() for k, p in conv.items()}
    nhwc = {"w": torch.nn.Parameter(conv["w"].detach().contiguous(memory_format=torch.channels_last)),
            "b": torch.nn.Parameter(conv["b"].detach().clone())}
    assert not nhwc["w"].is_contiguous()
    nhwc["w"].grad = torch.zeros_like(nhwc["w"])  # autograd gives channels-last gradients for NHWC weights
    assert not nhwc["w"].grad.is_contiguous()
    prior.bind(nhwc).add_grad_(0.1)
    for k in conv:
        assert torch.allclose(nhwc[k].grad, expected[k], rtol=1e-6, atol=1e-7), k
