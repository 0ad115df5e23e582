"""Bayes by Backprop prior learning (BYOV) and the BYOL source objective: known answers."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from bayes_transfer.models.resnets import build_model, split_named_parameters
from bayes_transfer.objectives.byol import BYOLObjective, byol_loss, byol_momentum
from bayes_transfer.priors.bbb import BBBConfig, beta_schedule, learn_bbb_prior
from bayes_transfer.priors.gaussian import GaussianPrior

# the "SSL" loss of the known-answer test: a Gaussian log-likelihood with known precision A (per datum)
PRECISION = torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])


class _QuadraticLoss(nn.Module):
    """L(theta) = mean_i 1/2 (x_i - theta)^T A (x_i - theta); theta is the weight of a Linear(1, 3) "model",
    read as model(1), so that exemplar reparameterisation gives every example its own draw of theta."""

    kind = "quadratic"

    def forward(self, model, x, y):
        r = x - model(torch.ones(x.shape[0], 1, dtype=x.dtype))
        return 0.5 * ((r @ PRECISION) * r).sum(-1).mean()


def test_beta_schedule_is_a_one_cycle_cosine():
    assert beta_schedule(0, 100, 0.5) == 0.0
    assert beta_schedule(50, 100, 0.5) == pytest.approx(0.25)
    assert beta_schedule(25, 100, 1.0) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert beta_schedule(100, 100, 0.5) == beta_schedule(500, 100, 0.5) == 0.5
    with pytest.raises(ValueError, match="bbb.prior"):
        BBBConfig(prior="ema").check()


def test_bbb_on_a_quadratic_loss_recovers_the_known_posterior_variance(tmp_path):
    n, reps = 50, 64
    g = torch.Generator().manual_seed(0)
    x = 1.0 + torch.randn(n, 3, generator=g)
    # the data set repeated 64 times, one full batch, N = 50 in the KL scaling: the same objective as the
    # 50 points, with 64 independent draws of theta per example and step (exemplar reparameterisation)
    data = TensorDataset(x.repeat(reps, 1), torch.zeros(n * reps, dtype=torch.long))
    cfg = BBBConfig(steps=600, batch_size=n * reps, lr=0.05, anneal_steps=150, prior="zero", prior_variance=1.0,
                    reparameterisation="exemplar", num_data=n)
    model = nn.Linear(1, 3, bias=False)
    nn.init.zeros_(model.weight)
    prior, history = learn_bbb_prior(model, _QuadraticLoss(), data, cfg, seed=1, metadata={"tier": "test"})
    # generalised posterior p(w) exp(-N L(w)) with p = N(0, I): Gaussian with precision P = N A + I
    prec = n * PRECISION.double() + torch.eye(3, dtype=torch.float64)
    mean = torch.linalg.solve(prec, n * PRECISION.double() @ x.double().mean(0))
    var_mean_field = 1.0 / torch.diagonal(prec)  # what a mean-field q converges to
    # tolerances: variances within 5 % (relative), mean within 2 % of a posterior standard deviation;
    # measured over 4 seeds: <= 2.4 % and <= 0.3 %
    assert torch.allclose(prior.variance.double(), var_mean_field, rtol=0.05), (prior.variance, var_mean_field)
    assert torch.all((prior.mean.double() - mean).abs() <= 0.02 * var_mean_field.sqrt())
    assert torch.equal(model.weight.detach().reshape(-1), prior.mean)  # the model ends at the posterior mean
    assert prior.rank == 0 and prior.names == ["weight"] and prior.shapes == [(3, 1)]
    meta = prior.metadata
    assert meta["prior_method"] == "bbb" and meta["source_loss"] == "quadratic" and meta["tier"] == "test"
    assert meta["bbb"]["log_var_init"] == -10.0 and meta["bbb"]["num_data"] == n
    assert history[0]["beta"] == 0.0 and history[-1]["beta"] == 1.0
    prior.save(tmp_path / "bbb.pt")
    back = GaussianPrior.load(tmp_path / "bbb.pt")
    assert torch.equal(back.variance, prior.variance) and back.metadata == prior.metadata


# ------------------------------------------------------------------------------ BYOL
def test_byol_loss_known_values():
    a = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert float(byol_loss(a, 3.0 * a)) == pytest.approx(0.0, abs=1e-6)  # identical after normalisation
    assert float(byol_loss(a, -a)) == pytest.approx(4.0)
    e1, e2 = torch.eye(2)[:1], torch.eye(2)[1:]
    assert float(byol_loss(e1, e2)) == pytest.approx(2.0)
    assert byol_momentum(0, 100, 0.99) == pytest.approx(0.99) and byol_momentum(100, 100, 0.99) == 1.0


def _noise_augment(x, generator):
    return x + 0.1 * torch.randn(x.shape, generator=generator)


def test_byol_target_is_an_exponential_moving_average():
    torch.manual_seed(0)
    model = build_model("small_resnet", 5, width=4)
    obj = BYOLObjective(model, _noise_augment, hidden_dim=8, proj_dim=4, momentum=0.9)
    before = {n: p.detach().clone() for n, p in obj.target_encoder.named_parameters()}
    proj_before = [p.detach().clone() for p in obj.target_projector.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for p in obj.projector.parameters():
            p.mul_(2.0)
    backbone, _ = split_named_parameters(model)
    obj.update_target(backbone)
    for n, p in obj.target_encoder.named_parameters():
        want = 0.9 * before[n] + 0.1 * backbone[n] if n in backbone else before[n]  # fc is not given: unchanged
        assert torch.allclose(p, want, atol=1e-6), n
    for t, b, o in zip(obj.target_projector.parameters(), proj_before, obj.projector.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    assert all(not p.requires_grad for p in obj.target_encoder.parameters())
    names = {id(p) for p in obj.trainable_parameters()}
    assert names == {id(p) for p in list(obj.projector.parameters()) + list(obj.predictor.parameters())}
    with pytest.raises(KeyError, match="nope"):
        obj.update_target({"nope": torch.zeros(1)})


def test_byol_loss_is_zero_when_online_prediction_equals_target_projection():
    torch.manual_seed(0)
    model = build_model("small_resnet", 5, width=4)
    obj = BYOLObjective(model, lambda x, g: x, hidden_dim=8, proj_dim=4)  # identity views
    obj.predictor = nn.Identity()  # online = target branch exactly
    x = torch.randn(6, 1, 8, 8)
    assert float(obj(model, x).detach()) == pytest.approx(0.0, abs=1e-5)


def test_bbb_with_byol_and_the_teacher_prior_runs_and_covers_the_backbone_only():
    torch.manual_seed(0)
    model = build_model("small_resnet", 5, width=4)
    obj = BYOLObjective(model, _noise_augment, hidden_dim=8, proj_dim=4, momentum=0.5)
    target_before = {n: p.detach().clone() for n, p in obj.target_encoder.named_parameters()}
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.zeros(32, dtype=torch.long))
    cfg = BBBConfig(steps=4, batch_size=16, lr=1e-2, prior="teacher", beta_end=0.5)
    prior, history = learn_bbb_prior(model, obj, data, cfg, seed=0)
    backbone, _ = split_named_parameters(model)
    assert prior.names == list(backbone) and prior.rank == 0 and len(history) == 4
    assert not any(n.startswith("fc.") for n in prior.names)
    assert torch.allclose(prior.variance, torch.full_like(prior.variance, math.exp(-10.0)), rtol=0.5)
    assert prior.metadata["source_loss"] == "byol" and prior.metadata["kl_prior"]["kind"] == "teacher"
    moved = obj.target_encoder.conv1.weight - target_before["conv1.weight"]
    assert float(moved.abs().max()) > 0  # the EMA target followed the posterior mean
