"""Learning the SWAG prior: burn-in cycles, the augmented supervised objective, the pre-training's weight decay,
the stationarity diagnostic in the metadata and the workflow's drift warning."""

import logging
import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from bayes_transfer.data.digits import augment
from bayes_transfer.models.resnets import build_model
from bayes_transfer.objectives.pretrain import PretrainConfig, SourceObjective
from bayes_transfer.priors import learning
from bayes_transfer.priors.diagnostics import prior_diagnostics
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.priors.swag import SWAGCollector


def _data(n=48, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g))


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("small_resnet", 3)


def test_supervised_objective_augments_deterministically_with_its_seed():
    model = _model().eval()
    x, y = _data(16).tensors
    torch.set_grad_enabled(False)
    try:
        _check_augmented_losses(model, x, y)
    finally:
        torch.set_grad_enabled(True)


def _check_augmented_losses(model, x, y):
    plain = float(SourceObjective("supervised")(model, x, y))
    assert plain == float(SourceObjective("supervised")(model, x, y))
    first = float(SourceObjective("supervised", supervised_augment=augment, seed=3)(model, x, y))
    again = float(SourceObjective("supervised", supervised_augment=augment, seed=3)(model, x, y))
    other = float(SourceObjective("supervised", supervised_augment=augment, seed=4)(model, x, y))
    assert first == again  # the same seed, the same view
    assert abs(first - plain) > 1e-4 and abs(first - other) > 1e-4
    # the view is the augmentation of the batch drawn from the objective's generator, nothing else
    obj = SourceObjective("supervised", supervised_augment=augment, seed=3)
    view = augment(x, torch.Generator().manual_seed(3 + 104729))
    assert first == pytest.approx(float(torch.nn.functional.cross_entropy(model(view), y)), rel=1e-6)
    assert obj.kind == "supervised"


def _snapshots_of(monkeypatch):
    """Record every snapshot learn_prior collects (by the collector's own flattening)."""
    seen = []
    original = SWAGCollector.collect

    def collect(self, params, t=None):
        seen.append((t, self.flat(params).clone()))
        original(self, params, t)

    monkeypatch.setattr(learning.SWAGCollector, "collect", collect)
    return seen


def test_burn_in_cycles_are_left_out_of_the_moments(monkeypatch):
    cfg = dict(cycles=5, steps_per_cycle=3, batch_size=8, max_rank=4, lr=0.05, augment=False)
    seen = _snapshots_of(monkeypatch)
    learn_prior(_model(), SourceObjective("supervised"), _data(), SWAGConfig(burn_in_cycles=0, **cfg), seed=1)
    all_snaps = [s for _, s in seen]
    assert [t for t, _ in seen] == [2, 5, 8, 11, 14]  # the last step of every cycle
    seen.clear()
    prior = learn_prior(_model(), SourceObjective("supervised"), _data(), SWAGConfig(burn_in_cycles=2, **cfg),
                        seed=1)
    # burn-in only drops snapshots: training is the same, so the kept ones are the last three of the full run
    assert [t for t, _ in seen] == [8, 11, 14]
    for (_, a), b in zip(seen, all_snaps[2:]):
        assert torch.equal(a, b)
    kept = torch.stack(all_snaps[2:]).double()
    assert prior.metadata["n_snapshots"] == 3 and prior.rank == 3
    np.testing.assert_allclose(prior.mean.double().numpy(), kept.mean(0).numpy(), rtol=1e-6, atol=1e-7)
    expected = 0.5 * np.maximum(kept.var(0, unbiased=False).numpy(), 1e-8)
    np.testing.assert_allclose(prior.variance.double().numpy(), expected, rtol=1e-5, atol=1e-12)
    assert prior.metadata["diagnostics"]["n"] == 3 and prior.metadata["diagnostics"]["trend_source"] == "snapshots"


def test_too_long_a_burn_in_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="swag.burn_in_cycles"):
        learn_prior(_model(), SourceObjective("supervised"), _data(),
                    SWAGConfig(cycles=3, steps_per_cycle=2, burn_in_cycles=2), seed=0)


def test_swag_augments_the_supervised_objective_and_keeps_the_pretraining_weight_decay(monkeypatch):
    assert SWAGConfig().weight_decay is None
    assert SWAGConfig().resolved_weight_decay() == PretrainConfig().weight_decay
    assert SWAGConfig(weight_decay=1e-5).resolved_weight_decay() == 1e-5
    cfg = dict(cycles=3, steps_per_cycle=3, batch_size=8, max_rank=2, lr=0.05, burn_in_cycles=0)

    def run(**kw):
        return learn_prior(_model(), SourceObjective("supervised", seed=0), _data(), SWAGConfig(**cfg, **kw),
                           seed=1, source_augment=augment)

    aug, aug2, plain = run(), run(), run(augment=False)
    assert torch.equal(aug.mean, aug2.mean) and torch.equal(aug.variance, aug2.variance)  # seeded
    assert float((aug.mean - plain.mean).abs().max()) > 1e-5
    assert aug.metadata["source_augmented"] is True and plain.metadata["source_augmented"] is False
    assert aug.metadata["swag"]["weight_decay"] == PretrainConfig().weight_decay
    # the weight decay the optimiser got is the resolved one
    got = []
    original = torch.optim.SGD.__init__

    def sgd(self, params, **kw):
        got.append(kw["weight_decay"])
        original(self, params, **kw)

    monkeypatch.setattr(torch.optim.SGD, "__init__", sgd)
    run(augment=False)
    assert got == [PretrainConfig().weight_decay]


def test_the_workflow_fills_swag_weight_decay_from_pretrain_unless_set():
    from bayes_transfer.config.schema import apply_dependent_defaults

    def cfg(swag_wd):
        return {"pretrainings": ["supervised"], "sizes": [10], "pretrain": {"weight_decay": 3e-4},
                "swag": {"weight_decay": swag_wd}, "ablations": {"pretraining": "supervised", "n_train": 10},
                "segmentation": {"resnet50": {"pretrainings": ["supervised"]},
                                 "resnet101": {"pretrainings": ["supervised"]}}}

    assert apply_dependent_defaults(cfg(None))["swag"]["weight_decay"] == 3e-4
    assert apply_dependent_defaults(cfg(5e-5))["swag"]["weight_decay"] == 5e-5


def _drift_prior(drift: bool, d=400, n=12):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(d, generator=gen)
    step = torch.randn(d, generator=gen) / math.sqrt(d)
    snaps = [start + ((i + 1) * step if drift else 0.0) + 0.01 * torch.randn(d, generator=gen) for i in range(n)]
    col = SWAGCollector({"w": start}, max_rank=n)
    for i, s in enumerate(snaps):
        col.collect({"w": s}, t=i)
    prior = col.prior(metadata={"swag": {"variance_floor": 1e-8}})
    prior.metadata["diagnostics"] = prior_diagnostics(prior, start, trend=col.trend, m2=col.m2).to_metadata()
    return prior


def test_a_drift_dominated_prior_is_a_warning_naming_its_file(caplog):
    from bayes_transfer.stages.experiment import warn_if_drift_dominated

    with caplog.at_level(logging.INFO, logger="bayes_transfer.stages.source"):
        assert warn_if_drift_dominated(_drift_prior(True), "results/priors/supervised.pt") is True
        assert warn_if_drift_dominated(_drift_prior(False), "results/priors/simclr.pt") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "results/priors/supervised.pt" in warnings[0].getMessage()
    assert "drift-dominated" in warnings[0].getMessage()
    assert any("results/priors/simclr.pt" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_prior_stage_warns_in_the_job_log_for_a_drift_dominated_prior(tmp_path, monkeypatch):
    from bayes_transfer.logs import job_log
    from bayes_transfer.stages import experiment, source

    model = build_model("small_resnet", 5)  # the digits' source task has classes 0-4
    objective = SourceObjective("supervised", model.feature_dim)
    ckpt = tmp_path / "supervised.pt"
    torch.save({"state_dict": model.state_dict(), "objective": objective.state_dict()}, ckpt)
    calls = []

    def fake_learn_prior(model, objective, source, cfg, **kw):
        calls.append((cfg, kw["source_augment"]))
        return _drift_prior(True)

    monkeypatch.setattr(source, "learn_prior", fake_learn_prior)
    out, log_path = tmp_path / "priors" / "supervised.pt", tmp_path / "prior.log"
    with job_log(str(log_path), "learn prior supervised"):
        experiment.prior_stage("supervised", str(ckpt), {"dataset": "digits"}, {"arch": "small_resnet"},
                               {"cycles": 3}, str(out))
    assert out.is_file()
    text = log_path.read_text()
    assert f"WARNING: prior {out} is drift-dominated" in text
    (cfg, source_augment), = calls
    assert cfg.augment is True and source_augment is augment  # the digits' own augmentation
