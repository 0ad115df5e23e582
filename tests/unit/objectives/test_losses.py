"""Tests for bayes_transfer.objectives.losses (NT-Xent and the projection head)."""

import math

import pytest
import torch
from torch import nn

from bayes_transfer.objectives.losses import ProjectionHead, nt_xent


def naive_nt_xent(z1, z2, temperature):
    """Reference NT-Xent with explicit loops over anchors and candidates."""
    b = z1.shape[0]
    z = torch.cat([z1, z2]).double()
    z = [row / row.norm() for row in z]
    total = 0.0
    for i in range(2 * b):
        pos = i + b if i < b else i - b
        denom = 0.0
        for k in range(2 * b):
            if k != i:
                denom += math.exp(float(z[i] @ z[k]) / temperature)
        total += -(float(z[i] @ z[pos]) / temperature - math.log(denom))
    return total / (2 * b)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("batch,dim", [(1, 3), (4, 8), (7, 5)])
def test_nt_xent_matches_naive_loops(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z2 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, temperature=temperature).item()
    assert got == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-5)
    # float32 also agrees closely
    got32 = nt_xent(z1.float(), z2.float(), temperature=temperature).item()
    assert got32 == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-4)


def test_nt_xent_single_pair_is_zero():
    # with one pair the positive is the only candidate, so the loss is exactly 0
    z = torch.randn(1, 4)
    assert nt_xent(z, torch.randn(1, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_identical_views_lower_than_random():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(32, 16, generator=g)
    same = nt_xent(z1, z1.clone()).item()
    rand = nt_xent(z1, torch.randn(32, 16, generator=g)).item()
    assert same < rand
    assert rand > math.log(2 * 32 - 1) - 1.0  # roughly chance level


def test_nt_xent_scale_invariant():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(10, 6, generator=g, dtype=torch.float64)
    z2 = torch.randn(10, 6, generator=g, dtype=torch.float64)
    base = nt_xent(z1, z2, 0.2)
    assert nt_xent(5.0 * z1, 0.01 * z2, 0.2).item() == pytest.approx(base.item(), rel=1e-10)


def test_nt_xent_symmetric_and_differentiable():
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4, requires_grad=True)
    loss = nt_xent(z1, z2)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(nt_xent(z2, z1).item(), rel=1e-5)
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize(
    "z1,z2,temperature,match",
    [
        (torch.randn(4, 3), torch.randn(5, 3), 0.1, "same shape"),
        (torch.randn(4), torch.randn(4), 0.1, "2-D"),
        (torch.randn(4, 3), torch.randn(4, 3), 0.0, "temperature"),
        (torch.randn(4, 3), torch.randn(4, 3), -1.0, "temperature"),
        (torch.randn(0, 3), torch.randn(0, 3), 0.1, "at least one"),
    ],
)
def test_nt_xent_rejects_bad_input(z1, z2, temperature, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(z1, z2, temperature)


def test_nt_xent_rejects_integer_input():
    with pytest.raises(TypeError, match="floating"):
        nt_xent(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize("layers,n_linear", [(2, 2), (3, 3)])
def test_projection_head_structure(layers, n_linear):
    head = ProjectionHead(12, 20, 7, layers=layers)
    mods = list(head.net)
    assert sum(isinstance(m, nn.Linear) for m in mods) == n_linear
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mods) == n_linear - 1
    assert sum(isinstance(m, nn.ReLU) for m in mods) == n_linear - 1
    assert isinstance(mods[-1], nn.Linear) and mods[-1].out_features == 7
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 7)
    loss = nt_xent(out, head(torch.randn(5, 12)))
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_projection_head_rejects_bad_args():
    with pytest.raises(ValueError, match="layers"):
        ProjectionHead(4, 4, 4, layers=1)
    with pytest.raises(ValueError, match="hidden_dim"):
        ProjectionHead(4, 0, 4)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        ProjectionHead(4, 4, 4)(torch.randn(3, 5))
