"""Segmentation (Tables 1, 15, 16): mean IoU by hand, the prior binds exactly the backbone, the sampler's
temperature, a few training steps of every method, the tables, and a killed job resumed with the same numbers."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from bayes_transfer.results import iou
from bayes_transfer.data.scenes import SceneConfig, load_digit_scenes
from bayes_transfer.models.resnets import build_model, split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError
from bayes_transfer.config.segmentation import segmentation_config_problems
from bayes_transfer.data.padding import pad_batch, pad_collate
from bayes_transfer.inference.methods import relevant_hyper
from bayes_transfer.inference.pixel_bma import evaluate
from bayes_transfer.inference.samplers import NesterovSGHMC
from bayes_transfer.inference.schedules import PolyLR, poly_factor
from bayes_transfer.inference.segmentation import SEGMENTATION_METHODS, SegmentationHyper, fit_segmentation
from bayes_transfer.models.deeplab import (ModelSpec, backbone_parameters, bind_backbone_prior,
                                           build_segmentation_model, head_parameters, load_pretrained_backbone)

ROOT = Path(__file__).resolve().parents[2]
SMALL = ModelSpec("small_resnet", 6, {}, 16, (1, 2, 3), 8, True, 0.1)
FAST = SegmentationHyper(steps=6, batch_size=4, lr=0.1, samples_per_cycle=2, exploration_fraction=0.5, log_every=2,
                         prior_scale=1e6, eval_batch_size=8)


# ------------------------------------------------------------------------------------------- mean IoU
# Two 2x3 label maps, 4 classes (class 3 absent from target and prediction), 255 = ignore.
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]], [[2, 2, 0], [255, 1, 1]]])
PRED = torch.tensor([[[0, 1, 1], [1, 2, 2]], [[2, 0, 0], [0, 1, 2]]])
# by hand over the 10 scored pixels (rows = target, columns = prediction):
#   target 0: pred 0 twice, pred 1 once; target 1: pred 1 three times, pred 2 once; target 2: pred 2 twice, 0 once
HAND_CM = torch.tensor([[2, 1, 0, 0], [0, 3, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
# IoU_c = tp / (row + column - tp): 2/(3+3-2), 3/(4+4-3), 2/(3+3-2); class 3 has no union and is left out
HAND_MIOU = (2 / 4 + 3 / 5 + 2 / 4) / 3


def test_mean_iou_matches_hand_computed_confusion_matrix_with_ignore_label():
    assert torch.equal(iou.confusion_matrix(PRED, TARGET, 4, ignore_index=255), HAND_CM)
    assert iou.mean_iou(PRED, TARGET, 4) == pytest.approx(HAND_MIOU, abs=1e-12)
    assert iou.mean_iou_torchmetrics(PRED, TARGET, 4, ignore_index=255) == pytest.approx(HAND_MIOU, abs=1e-6)
    # the ignored pixels are predicted wrongly (2 and 0): counting them would lower every IoU involved
    assert iou.mean_iou(PRED, TARGET.masked_fill(TARGET == 255, 1), 4) < HAND_MIOU - 0.05


class OneHotLogits(nn.Module):
    """A 'segmentation model' whose logits are its input (C channels) times a learnable scale."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return x * self.scale


def test_evaluate_accumulates_over_batches_and_averages_samples_per_pixel():
    x = torch.nn.functional.one_hot(PRED, 4).permute(0, 3, 1, 2).float() * 3.0
    data = TensorDataset(x, TARGET)
    model = OneHotLogits()
    out = evaluate(model, [model.state_dict()], data, 4, torch.device("cpu"), batch_size=1, multiple=1)
    assert out["miou"] == pytest.approx(HAND_MIOU, abs=1e-6)  # torchmetrics, accumulated over two batches
    assert out["miou_confusion"] == pytest.approx(HAND_MIOU, abs=1e-12)
    assert out["pixel_accuracy"] == pytest.approx(7 / 10)
    assert out["iou_per_class"][:3] == pytest.approx([0.5, 0.6, 0.5]) and out["iou_per_class"][3] is None
    # Bayesian model average of two samples (scales 1 and 0.2): mean of the softmax probabilities per pixel
    s1, s2 = {"scale": torch.tensor(1.0)}, {"scale": torch.tensor(0.2)}
    out2 = evaluate(model, [s1, s2], data, 4, torch.device("cpu"), batch_size=2, multiple=1)
    probs = (torch.softmax(x, 1) + torch.softmax(0.2 * x, 1)) / 2
    valid = TARGET != 255
    p_true = probs.gather(1, TARGET.clamp(0, 3).unsqueeze(1)).squeeze(1)[valid]
    assert out2["pixel_nll"] == pytest.approx(float(-p_true.double().log().mean()), rel=1e-6)
    assert out2["num_samples"] == 2 and out2["miou"] == pytest.approx(HAND_MIOU, abs=1e-6)


def test_padding_carries_the_ignore_label_and_makes_sides_divisible():
    x, y = pad_batch(torch.ones(2, 3, 5, 7), torch.zeros(2, 5, 7, dtype=torch.long), 4)
    assert x.shape == (2, 3, 8, 8) and y.shape == (2, 8, 8)
    assert torch.all(y[:, 5:, :] == 255) and torch.all(y[:, :, 7:] == 255) and torch.all(y[:, :5, :7] == 0)
    assert torch.all(x[:, :, 5:, :] == 0)
    xb, yb = pad_collate([(torch.ones(3, 5, 7), torch.zeros(5, 7)), (torch.ones(3, 9, 4), torch.ones(9, 4))], 16)
    assert xb.shape == (2, 3, 16, 16) and yb[0, 6, 0] == 255 and yb[1, 8, 3] == 1 and yb[1, 0, 5] == 255


def test_poly_learning_rate_policy():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5 ** 0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
    from bayes_transfer.inference.samplers import CyclicalSchedule

    poly = PolyLR(0.9)
    assert poly(50, 100, None) == poly_factor(50, 100, 0.9)
    # within cycles of 23 steps; the last cycle (steps 46-69, 24 steps) runs to the last step
    schedule = CyclicalSchedule(70, 3, 0.5, 1)
    assert poly(10, 70, schedule) == pytest.approx((13 / 23) ** 0.9) and poly(23, 70, schedule) == 1.0
    assert poly(58, 70, schedule) == pytest.approx(0.5 ** 0.9)  # 12 of the last cycle's 24 steps


# ------------------------------------------------------------------------------------------- priors by name
def test_small_deeplab_backbone_has_the_classifier_backbone_names_and_the_prior_binds_only_there():
    clf = build_model("small_resnet", 5)
    clf_backbone, _ = split_named_parameters(clf)
    seg = build_segmentation_model(SMALL)
    backbone, rest = backbone_parameters(seg), head_parameters(seg)
    assert list(backbone) == list(clf_backbone)  # same names, same order
    assert all(backbone[n].shape == clf_backbone[n].shape for n in backbone)
    assert rest and all(n.startswith(("decoder.", "segmentation_head.")) for n in rest)
    assert any(n.startswith("decoder.aspp.") for n in rest)
    assert len(backbone) + len(rest) == len(list(seg.parameters()))
    # a learned prior of the classifier's feature extractor binds; its gradient reaches only the backbone
    prior = GaussianPrior.isotropic({k: v + 1.0 for k, v in clf_backbone.items()}, 0.5, centred_at_params=True)
    bound = bind_backbone_prior(seg, prior)
    seg.zero_grad(set_to_none=True)
    bound.add_grad_(1.0)
    for name, p in backbone.items():
        expected = (p.detach() - (clf_backbone[name].detach() + 1.0)) / 0.5
        assert torch.allclose(p.grad, expected, atol=1e-5), name
    assert all(p.grad is None for p in rest.values())


def test_prior_of_another_network_is_rejected_by_name_or_shape():
    seg = build_segmentation_model(SMALL)
    wide, _ = split_named_parameters(build_model("small_resnet", 5, width=8))
    with pytest.raises(PriorMismatchError, match="shape"):
        bind_backbone_prior(seg, GaussianPrior.isotropic(wide, 1.0))
    deep, _ = split_named_parameters(build_model("small_resnet", 5, blocks=(2, 2, 2)))
    with pytest.raises(PriorMismatchError):
        bind_backbone_prior(seg, GaussianPrior.isotropic(deep, 1.0))


def test_smp_resnet_encoder_loads_a_torchvision_backbone_by_name_and_fails_loudly():
    clf = build_model("resnet18", 10)
    clf_backbone, _ = split_named_parameters(clf)
    seg = build_segmentation_model(ModelSpec("resnet18", 21, {}, 16, (6, 12, 18), 16, True, 0.5))
    assert list(backbone_parameters(seg)) == list(clf_backbone)
    loaded = load_pretrained_backbone(seg, {f"module.{k}": v for k, v in clf.state_dict().items()})
    assert "layer4.1.bn2.running_var" in loaded and not any(k.startswith("fc.") for k in loaded)
    for name, p in backbone_parameters(seg).items():
        assert torch.equal(p, clf_backbone[name]), name
    assert seg.encoder.layer4[0].conv2.dilation == (2, 2)  # output stride 16: last stage dilated
    state = {k: v for k, v in clf.state_dict().items() if k != "layer2.0.conv1.weight"}
    with pytest.raises(ValueError, match="layer2.0.conv1.weight"):
        load_pretrained_backbone(seg, state)
    with pytest.raises(ValueError, match="shape"):
        load_pretrained_backbone(seg, clf.state_dict() | {"conv1.weight": torch.zeros(64, 1, 7, 7)})
    with pytest.raises(ValueError, match="does not have"):  # a key the encoder lacks is not silently dropped
        load_pretrained_backbone(seg, clf.state_dict() | {"layer5.0.conv1.weight": torch.zeros(1)})
    out = seg(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 21, 32, 48)


def test_relevant_hyper_reruns_only_dependent_methods():
    cfg = SegmentationHyper().to_dict()
    common = {"steps", "batch_size", "lr", "lr_power", "momentum", "nesterov", "head_weight_decay",
              "eval_batch_size", "num_workers", "log_every", "grad_clip"}
    sampler = {"sampler", "temperature", "cycles", "exploration_fraction", "samples_per_cycle"}
    learned = {"prior_scale", "prior_convention", "prior_rank", "prior_truncation", "prior_update"}
    assert set(cfg) == common | sampler | learned | {"weight_decay"}
    assert set(relevant_hyper("sgd_transfer", cfg, SegmentationHyper)) == common | {"weight_decay"}
    # segmentation's non-learned prior is the weight decay (not isotropic_variance as in classification)
    assert set(relevant_hyper("bnn_isotropic_prior", cfg, SegmentationHyper)) == common | sampler | {"weight_decay"}
    assert set(relevant_hyper("bnn_learned_prior", cfg, SegmentationHyper)) == common | sampler | learned
    assert set(relevant_hyper("sgd_learned_prior", cfg, SegmentationHyper)) == common | learned
    with pytest.raises(ValueError, match="sgd_ensemble"):
        relevant_hyper("sgd_ensemble", cfg, SegmentationHyper)


# ------------------------------------------------------------------------------------------- sampler
def test_nesterov_sghmc_without_noise_is_torch_nesterov_sgd():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(20))
    b = torch.nn.Parameter(a.detach().clone())
    h = torch.linspace(0.1, 2.0, 20)
    ours = NesterovSGHMC([a], lr=0.05, num_data=10, momentum=0.9, temperature=1.0)
    ref = torch.optim.SGD([b], lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(30):
        for p, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            (0.5 * h * p * p).sum().backward()
        ours.step(noise=False)
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_nesterov_sghmc_samples_at_its_temperature():
    """U/N = theta^2 / 2 per coordinate with N = 1 -> stationary variance T (within 8 % at small lr)."""
    for temperature in (1.0, 0.01):
        theta = torch.nn.Parameter(torch.zeros(4000, dtype=torch.float64))
        opt = NesterovSGHMC([theta], lr=0.01, num_data=1, momentum=0.9, temperature=temperature)
        gen = torch.Generator().manual_seed(3)
        kept = []
        for t in range(1500):
            opt.zero_grad()
            (0.5 * theta.square().sum()).backward()
            opt.step(generator=gen)
            if t >= 500 and t % 50 == 0:
                kept.append(theta.detach().clone())
        var = torch.stack(kept).var().item()
        assert var == pytest.approx(temperature, rel=0.08)


# ------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def scenes():
    return load_digit_scenes(SceneConfig(canvas=16, min_digits=1, max_digits=2, n_train=12, n_test=6))


def _fit(scenes, method, hp=FAST, seed=0, prior=None):
    torch.manual_seed(seed)
    model = build_segmentation_model(SMALL)
    if prior is None and method in ("bnn_learned_prior", "sgd_learned_prior"):
        prior = GaussianPrior.isotropic(backbone_parameters(model), 1e-6, centred_at_params=True)
    return fit_segmentation(model, scenes.train, scenes.test, method=method, hp=hp, num_classes=6,
                            learned_prior=prior, seed=seed)


@pytest.mark.parametrize("method", SEGMENTATION_METHODS)
def test_every_method_trains_a_few_steps_and_scores_in_range(scenes, method):
    res = _fit(scenes, method)
    assert res.success, res.reason
    m = res.metrics
    assert 0.0 <= m["miou"] <= 1.0 and m["miou"] == pytest.approx(m["miou_confusion"], abs=1e-6)
    assert res.num_samples == (2 if method.startswith("bnn_") else 1) and res.steps_run == FAST.steps
    assert [h["phase"] for h in res.history][-1] == ("sample" if method.startswith("bnn_") else "sgd")


def test_same_seed_gives_the_same_numbers_and_another_seed_others(scenes):
    a, b, c = (_fit(scenes, "bnn_learned_prior", seed=s) for s in (0, 0, 1))
    assert a.metrics == b.metrics and [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_diverged_run_is_recorded_with_a_reason(scenes):
    hp = SegmentationHyper(**(FAST.to_dict() | {"lr": 1e9}))
    res = _fit(scenes, "sgd_transfer", hp=hp)
    assert not res.success and "non-finite" in res.reason and res.metrics == {}


def test_learned_prior_is_required(scenes):
    model = build_segmentation_model(SMALL)
    with pytest.raises(ValueError, match="learned prior"):
        fit_segmentation(model, scenes.train, scenes.test, method="sgd_learned_prior", hp=FAST, num_classes=6)


# ------------------------------------------------------------------------------------------- config checks
def _cfg(**seg):
    base = {"data": {"dataset": "digits"}, "model": {"arch": "small_resnet"}, "swag": {"max_rank": 20},
            "segmentation": {"enabled": True, "datasets": ["digit_scenes"], "backbones": ["resnet50"],
                             "methods": list(SEGMENTATION_METHODS),
                             "resnet50": {"arch": None, "pretrainings": ["supervised"]},
                             "scenes": {"canvas": 24, "min_digits": 1, "max_digits": 3},
                             "train": {"steps": 20, "cycles": 1, "exploration_fraction": 0.8, "samples_per_cycle": 3}}}
    base["segmentation"].update(seg)
    return base


def test_config_problems_name_the_key():
    assert segmentation_config_problems(_cfg()) == []
    assert "segmentation.resnet50.arch: voc2012 needs a ResNet-50/101" in segmentation_config_problems(
        _cfg(datasets=["voc2012"]))[0]
    assert segmentation_config_problems(_cfg(scenes={"canvas": 8, "max_digits": 2}))[0].startswith(
        "segmentation.scenes.max_digits")
    assert "samples_per_cycle" in segmentation_config_problems(
        _cfg(train={"steps": 10, "cycles": 1, "exploration_fraction": 0.8, "samples_per_cycle": 5}))[0]
    paper = _cfg(datasets=["voc2012"], resnet50={"arch": "resnet101", "pretrainings": ["supervised"]})
    paper["data"]["dataset"] = "cifar10"
    assert segmentation_config_problems(paper)[0].startswith("segmentation.resnet50.checkpoints.supervised")
    assert segmentation_config_problems(_cfg(enabled=False, datasets=["voc2012"])) == []


# ------------------------------------------------------------------------------------------- tables
def test_tables_average_successful_seeds_and_show_failures(tmp_path):
    from bayes_transfer.io import write_json
    from bayes_transfer.stages.segmentation import segmentation_tables, tidy_segmentation_runs

    paths = []
    values = {("supervised", "sgd_transfer"): [0.5, 0.7], ("supervised", "bnn_isotropic_prior"): [0.6, None],
              ("supervised", "bnn_learned_prior"): [None, None], ("simclr", "sgd_learned_prior"): [0.8, 0.9]}
    for (p, m), vals in values.items():
        for seed, v in enumerate(vals):
            rec = {"dataset": "digit_scenes", "backbone": "resnet50", "arch": "small_resnet", "pretraining": p,
                   "method": m, "seed": seed, "success": v is not None, "reason": "" if v is not None else "diverged",
                   "eval_set": "test", "metrics": {"test": {"miou": v}} if v is not None else {}}
            path = tmp_path / f"{p}_{m}_{seed}.json"
            write_json(path, rec)
            paths.append(path)
    tidy = tidy_segmentation_runs(paths)
    assert list(tidy.columns[:10]) == ["dataset", "backbone", "arch", "pretraining", "method", "seed", "success",
                                       "reason", "metric", "value"]
    assert set(tidy["metric"]) == {"miou"} and tidy["value"].isna().sum() == 3
    t = segmentation_tables(tidy, ["digit_scenes"], ["resnet50"])
    row = t["table1"].loc["digit scenes, ResNet-50 (stand-in: small_resnet)"]
    assert row["SGD Transfer"] == "60.00 ± 10.00"  # values 0.5, 0.7: sd 0.1414, SE = sd / sqrt(2) = 0.1
    assert row["Non-Learned Prior (SGLD)"] == "60.00 (1 failed)"
    assert row["Learned Prior Supervised (SGLD)"] == "failed (2/2)"
    assert row["Learned Prior SSL (SGLD)"] == "not run"
    assert t["table1"].loc["digit scenes, ResNet-101"]["Learned Prior SSL (SGLD)"].startswith("*")
    assert t["table15"].loc["digit scenes"]["SSL Prior MAP"] == "85.00 ± 5.00"
    assert (t["table16"] == "not run (not in segmentation.backbones)").all().all()
    assert (segmentation_tables(tidy, ["digit_scenes"])["table16"] == "not run").all().all()


# ------------------------------------------------------------------------------------------- resuming
class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs, no cleanup in the code under test."""


def test_resubmitted_job_skips_finished_seeds_and_resumes_the_unfinished_one_exactly(tmp_path, monkeypatch, caplog):
    import bayes_transfer.inference.loop as loop
    from bayes_transfer.stages import segmentation as stage

    ckpt = tmp_path / "small.pt"
    torch.save({"state_dict": build_model("small_resnet", 5).state_dict()}, ckpt)
    kw = dict(checkpoint=str(ckpt), prior_path=None,
              dataset_cfg={"canvas": 16, "max_digits": 2, "n_train": 8, "n_test": 4, "lr": 0.1},
              model_cfg={"atrous_rates": [1, 2, 3], "decoder_channels": 8},
              backbone_model={"arch": "small_resnet", "kwargs": {}},
              train_cfg={"steps": 6, "batch_size": 4, "samples_per_cycle": 2, "exploration_fraction": 0.5,
                         "log_every": 1})

    def run(directory, **extra):
        outs = [str(directory / f"seed{s}.json") for s in (0, 1)]
        return outs, stage.segmentation_stage("digit_scenes", "resnet50", "supervised", "bnn_isotropic_prior",
                                              [0, 1], outs=outs, **kw, **extra)

    _, reference = run(tmp_path / "uninterrupted")
    real_save, saved = loop.save_state, []

    def save_then_die(obj, path):
        real_save(obj, path)
        saved.append((Path(path).name, obj.get("step"), obj.get("done", False)))
        if len(saved) == 4:  # seed 0: steps 2 and 4, then its result; seed 1: step 2, then the kill
            raise Killed

    monkeypatch.setattr(loop, "save_state", save_then_die)
    with pytest.raises(Killed):
        run(tmp_path / "killed", checkpoint_every=2)
    assert saved == [("seed0.json.fit0.ckpt", 2, False), ("seed0.json.fit0.ckpt", 4, False),
                     ("seed0.json.fit0.ckpt", None, True), ("seed1.json.fit0.ckpt", 2, False)]
    assert sorted(p.name for p in (tmp_path / "killed").glob("*.ckpt")) == ["seed0.json.fit0.ckpt",
                                                                             "seed1.json.fit0.ckpt"]
    monkeypatch.setattr(loop, "save_state", real_save)
    Path(tmp_path / "killed" / "seed0.json").unlink()  # Snakemake removes an incomplete job's outputs
    caplog.set_level("INFO", logger="bayes_transfer")
    _, records = run(tmp_path / "killed", checkpoint_every=2)
    assert "finished before" in caplog.text and "resumed at step 2/6" in caplog.text
    for ref, rec in zip(reference, records):  # the same numbers as the uninterrupted job, to the last bit
        assert rec["success"] and rec["metrics"] == ref["metrics"] and rec["history"] == ref["history"]
        assert {k: v for k, v in rec["diagnostics"].items() if k != "wall_time_s"} == {
            k: v for k, v in ref["diagnostics"].items() if k != "wall_time_s"}
    assert records[1]["diagnostics"]["steps_run"] == 6 and records[1]["diagnostics"]["num_samples"] == 2
    assert not list((tmp_path / "killed").glob("*.ckpt"))  # state files removed once every output is written
