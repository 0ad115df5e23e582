"""Fig. 3a done right: BatchNorm recomputed at every point restores filter-rescaling invariance; the source
loss along the same directions; distances in units of the prior's standard deviation."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayes_transfer.models.resnets import SmallResNet, split_named_parameters
from bayes_transfer.objectives.pretrain import SourceObjective
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.stages import landscape

TS = [-1.0, -0.5, 0.0, 0.5, 1.0]


def _net(seed=0):
    torch.manual_seed(seed)
    model = SmallResNet(num_classes=3, width=4).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-12  # BatchNorm's eps is the only thing between it and exact rescaling invariance
    return model


def _data(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (96,), generator=gen)
    return x, y


def _curves(model, head, x, y, bn_batches, seed=2):
    theta = {k: v.detach().clone() for k, v in split_named_parameters(model)[0].items()}
    d = landscape.random_directions(theta, 1, torch.Generator().manual_seed(seed))[0]
    return landscape.loss_along(model, head, landscape.filter_normalise(d, theta), TS, x, y,
                                bn_batches=bn_batches)


def test_landscape_is_invariant_to_filter_rescaling_when_batchnorm_is_recomputed():
    x, y = _data()
    train = [x[:48], x[48:]]
    model = _net()
    landscape.recompute_batchnorm_([model], train, model.features)  # the checkpoint's statistics
    head = nn.Linear(16, 3).double()
    scaled = _net()
    scaled.load_state_dict(model.state_dict())
    factors = torch.tensor([0.2, 0.7, 3.0, 5.0], dtype=torch.float64)  # one positive factor per filter
    with torch.no_grad():
        scaled.conv1.weight.mul_(factors[:, None, None, None])
    before = {k: v.clone() for k, v in scaled.state_dict().items()}
    fresh = _curves(model, head, x, y, train)
    rescaled = _curves(scaled, head, x, y, train)
    assert rescaled == pytest.approx(fresh, rel=1e-9)
    assert max(fresh) - min(fresh) > 1e-3  # the curve is not flat: the test compares something
    # parameters and BatchNorm buffers are restored after the evaluation
    assert all(torch.equal(v, before[k]) for k, v in scaled.state_dict().items())
    # with stale statistics (the old evaluation) the rescaled network's landscape differs
    stale = _curves(scaled, head, x, y, None)
    assert max(abs(a - b) / b for a, b in zip(stale, fresh)) > 1e-2


def test_recomputed_statistics_are_the_plain_average_over_batches():
    x, _ = _data()
    model = _net()
    momentum = model.bn1.momentum
    landscape.recompute_batchnorm_([model], [x[:48], x[48:]], model.features)
    with torch.no_grad():
        act = model.conv1(x)
    halves = [act[:48], act[48:]]
    want_mean = sum(h.mean((0, 2, 3)) for h in halves) / 2
    want_var = sum(h.var((0, 2, 3), unbiased=True) for h in halves) / 2
    assert torch.allclose(model.bn1.running_mean, want_mean, rtol=1e-10)
    assert torch.allclose(model.bn1.running_var, want_var, rtol=1e-10)
    assert model.bn1.momentum == momentum and model.training  # settings restored
    with pytest.raises(ValueError, match="no batches"):
        landscape.recompute_batchnorm_([model], [], model.features)


def _prior(k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    names, shapes = ["a.weight", "a.bias"], [(3, 2), (3,)]
    return GaussianPrior(torch.randn(9, generator=gen), torch.rand(9, generator=gen) + 0.1,
                         torch.randn(k, 9, generator=gen), names=names, shapes=shapes)


def test_prior_std_along_a_direction_matches_the_dense_covariance():
    prior = _prior()
    gen = torch.Generator().manual_seed(1)
    d = {"a.weight": torch.randn(3, 2, generator=gen), "a.bias": torch.randn(3, generator=gen)}
    u = torch.cat([d["a.weight"].reshape(-1), d["a.bias"]]).double()
    u = u / u.norm()
    dense = math.sqrt(float(u @ prior.covariance().double() @ u))
    assert landscape.prior_std_along(prior, d) == pytest.approx(dense, rel=1e-6)
    # a direction that leaves a parameter out moves it by zero; a prior direction has std = its singular value
    only_w = {"a.weight": d["a.weight"]}
    u_w = torch.cat([d["a.weight"].reshape(-1), torch.zeros(3)]).double()
    u_w = u_w / u_w.norm()
    assert landscape.prior_std_along(prior, only_w) == pytest.approx(
        math.sqrt(float(u_w @ prior.covariance().double() @ u_w)), rel=1e-6)
    top = landscape.prior_directions(prior, 1)[0]
    flat = torch.cat([top[n].reshape(-1) for n in prior.names]).double()
    s0 = float(torch.linalg.svdvals(prior.factor.double())[0])
    assert landscape.prior_std_along(prior, top) == pytest.approx(
        math.sqrt(s0 ** 2 + float((prior.variance.double() * flat ** 2).sum())), rel=1e-6)
    with pytest.raises(KeyError, match="does not cover"):
        landscape.prior_std_along(prior, {"b": torch.ones(2)})


def test_source_loss_along_is_the_source_objective_with_fixed_views():
    x, _ = _data()
    y = torch.randint(0, 3, (96,), generator=torch.Generator().manual_seed(3))
    model = _net()
    with torch.no_grad():
        model.fc.weight.mul_(50.0)  # confident logits, so that the loss responds to the perturbation
    theta = {k: v.detach().clone() for k, v in split_named_parameters(model)[0].items()}
    d = landscape.filter_normalise(landscape.random_directions(theta, 1, torch.Generator().manual_seed(4))[0], theta)
    sup = SourceObjective("supervised")
    losses = landscape.source_loss_along(model, sup, d, [0.0, 0.5], x, y, batch_size=32, recompute_batchnorm=False)
    model.eval()
    with torch.no_grad():
        assert losses[0] == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-9)
    assert losses[1] != pytest.approx(losses[0], rel=1e-2)

    def augment(xb, gen):
        return xb + 0.1 * torch.randn(xb.shape, generator=gen, dtype=xb.dtype)

    simclr = SourceObjective("simclr", model.feature_dim, augment=augment).double()
    first = landscape.source_loss_along(model, simclr, d, [0.0, 0.5], x, y, batch_size=48, seed=5)
    again = landscape.source_loss_along(model, simclr, d, [0.0, 0.5], x, y, batch_size=48, seed=5)
    assert first == again  # the same views at every call and every point
    assert all(math.isfinite(v) and v > 0 for v in first)


def test_landscape_stage_writes_downstream_and_source_rows(tmp_path):
    from bayes_transfer.models.resnets import build_model

    torch.manual_seed(0)
    model = build_model("small_resnet", 5)
    objective = SourceObjective("supervised", model.feature_dim)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "objective": objective.state_dict()}, ckpt)
    backbone, _ = split_named_parameters(model)
    gen = torch.Generator().manual_seed(1)
    flat = torch.cat([p.detach().reshape(-1) for p in backbone.values()])
    prior = GaussianPrior(flat, torch.full_like(flat, 1e-4), 1e-3 * torch.randn(2, flat.numel(), generator=gen),
                          list(backbone), [tuple(p.shape) for p in backbone.values()])
    prior.save(tmp_path / "prior.pt")
    cfg = {"n_train": 20, "prior_directions": 1, "random_directions": 1, "max_distance": 1.0, "points": 3,
           "head_weight_decay": 1e-3, "batchnorm": "recompute", "bn_batch_size": 256, "source_examples": 32,
           "source_batch_size": 128}
    kw = dict(checkpoint=str(ckpt), prior_path=str(tmp_path / "prior.pt"), data_cfg={"dataset": "digits"},
              model_cfg={"arch": "small_resnet"})
    table = landscape.landscape_stage("supervised", [0], cfg=cfg, out=str(tmp_path / "l.csv"), **kw)
    assert len(table) == 2 * 2 * 3  # loss sets x directions x points
    assert set(table["loss_set"]) == {"downstream", "source"}
    at0 = table[table["distance"] == 0.0]
    for _, g in at0.groupby("loss_set"):  # every direction starts at the same network
        assert g["loss"].nunique() == 1
    assert (at0["distance_prior_std"] == 0).all()
    end = table[(table["distance"] == 1.0) & (table["direction_type"] == "prior")]
    assert (end["distance_prior_std"] > 0).all()
    assert pd.read_csv(tmp_path / "l.csv").shape == table.shape
    summary = landscape.landscape_summary(table)
    assert set(summary["loss_set"]) == {"downstream", "source"} and "distance_prior_std" in summary
    stale = landscape.landscape_stage("supervised", [0], cfg=cfg | {"batchnorm": "stale", "source_examples": 0},
                                      out=str(tmp_path / "s.csv"), **kw)
    assert set(stale["loss_set"]) == {"downstream"}
    fresh = table[table["loss_set"] == "downstream"]["loss"].to_numpy()
    assert abs(stale["loss"].to_numpy() - fresh).max() > 1e-3  # recomputing BatchNorm changes the numbers


def test_landscape_cfg_defaults_live_in_the_schema_only(tmp_path):
    """Every key of the stage is an ablations.landscape key of the config schema (which holds its default), and
    a cfg missing one is an error naming it."""
    from bayes_transfer.config.schema import load_schema, resolve

    schema = load_schema()
    section = schema["properties"]["ablations"]["properties"]["landscape"]
    props = {k: resolve(v, schema) for k, v in section["properties"].items()}
    assert set(landscape.STAGE_KEYS) == set(props) - {"enabled"}
    assert all("default" in props[k] for k in landscape.STAGE_KEYS)
    assert props["batchnorm"]["default"] == "recompute"
    assert not hasattr(landscape, "STAGE_DEFAULTS")
    with pytest.raises(KeyError, match="bn_batch_size"):
        landscape.landscape_stage("supervised", [0], checkpoint="x", prior_path="y", data_cfg={}, model_cfg={},
                                  cfg={k: 1 for k in landscape.STAGE_KEYS if k != "bn_batch_size"},
                                  out=str(tmp_path / "l.csv"))
