"""SWAGCollector: float64 moments and deviations against numpy on the same snapshots."""

import numpy as np
import pytest
import torch

from bayes_transfer.priors.swag import SWAGCollector


def snapshots(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    # large offset + small spread: float32 E[x^2] - E[x]^2 would cancel catastrophically here
    return [
        {"conv.weight": 1000.0 + 0.01 * torch.randn(2, 3, generator=g), "bn.bias": torch.randn(4, generator=g)}
        for _ in range(n)
    ]


def test_moments_and_deviations_match_numpy():
    snaps = snapshots()
    coll = SWAGCollector(snaps[0], max_rank=4)
    for s in snaps:
        coll.collect(s)
    flat = np.stack([np.concatenate([s[n].double().numpy().ravel() for n in ("conv.weight", "bn.bias")])
                     for s in snaps])
    np.testing.assert_allclose(coll.mean.numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(coll.diagonal_variance().numpy(), flat.var(0), rtol=1e-9, atol=0)
    # deviation of snapshot i from the running mean of snapshots 0..i; the last 4 are kept, oldest first
    running = np.cumsum(flat, 0) / np.arange(1, len(snaps) + 1)[:, None]
    expected_dev = (flat - running)[-4:]
    np.testing.assert_allclose(coll.deviation_matrix().double().numpy(), expected_dev, rtol=1e-5, atol=1e-4)

    prior = coll.prior(metadata={"arch": "toy"})
    assert prior.names == ["conv.weight", "bn.bias"] and prior.shapes == [(2, 3), (4,)]
    # paper's SWAG covariance: 1/2 diag(v) + 1/2 D^T D / (K - 1)
    D = coll.deviation_matrix().double().numpy()
    cov = 0.5 * np.diag(flat.var(0)) + 0.5 * D.T @ D / (4 - 1)
    np.testing.assert_allclose(prior.covariance().double().numpy(), cov, rtol=1e-4, atol=1e-9)
    assert prior.metadata["arch"] == "toy" and prior.metadata["rank"] == 4
    assert prior.mean.dtype == torch.float32


def test_collects_from_module_by_name_and_excludes_buffers():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Linear(2, 2))
    backbone = {n: p for n, p in net.named_parameters() if not n.startswith("2.")}
    coll = SWAGCollector(backbone, max_rank=2)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        coll.collect(net)
    prior = coll.prior()
    assert prior.names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert prior.dim == 18 + 2 + 2 + 2


def test_prior_rank_and_errors():
    snaps = snapshots(5)
    coll = SWAGCollector(snaps[0], max_rank=3)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        coll.prior()
    for s in snaps:
        coll.collect(s)
    assert coll.prior().rank == 3
    assert coll.prior(rank=2).rank == 2
    assert coll.prior(rank=0).rank == 0
    with pytest.raises(ValueError, match="rank"):
        coll.prior(rank=4)
    with pytest.raises(KeyError, match="bn.bias"):
        coll.collect({"conv.weight": torch.zeros(2, 3)})
