"""SWAG stationarity diagnostics: drift is flagged, a stationary sequence is not (known constructions)."""

import math

import pytest
import torch

from bayes_transfer.priors import diagnostics as dg
from bayes_transfer.priors.swag import SWAGCollector

D = 4000  # high enough that a random direction is nearly orthogonal to a fixed one (|cos| ~ 1/sqrt(D))
N_SNAP = 20


def _collect(snapshots, floor=1e-30, max_rank=20):
    """Feed snapshots to a SWAGCollector plus TrendMoments exactly as the collector's wiring would."""
    col = SWAGCollector({"theta": snapshots[0]}, max_rank=max_rank, variance_floor=floor)
    trend = dg.TrendMoments(col.dim)
    for i, s in enumerate(snapshots):
        trend.observe(s.double() - col.mean, t=i)  # delta before the mean is updated
        col.collect({"theta": s})
    return col, trend


def _drift(gen, noise=0.01):
    start = torch.randn(D, generator=gen, dtype=torch.float64)
    step = torch.randn(D, generator=gen, dtype=torch.float64) / math.sqrt(D)  # |step| ~ 1
    snaps = [start + (i + 1) * step + noise * torch.randn(D, generator=gen, dtype=torch.float64) / math.sqrt(D)
             for i in range(N_SNAP)]
    return start, snaps


def _stationary(gen):
    point = torch.randn(D, generator=gen, dtype=torch.float64)
    start = point + torch.randn(D, generator=gen, dtype=torch.float64)  # the checkpoint lies elsewhere
    snaps = [point + 0.1 * torch.randn(D, generator=gen, dtype=torch.float64) for _ in range(N_SNAP)]
    return start, snaps


def _diag(start, snaps, use_trend=True):
    col, trend = _collect(snaps)
    return dg.diagnose(deviations=col.deviation_matrix(), mean=col.mean, start=start,
                       variance=col.diagonal_variance(), variance_floor=col.variance_floor,
                       trend=trend if use_trend else None, m2=col.m2)


def test_streaming_trend_share_equals_the_batch_formula():
    gen = torch.Generator().manual_seed(0)
    _, snaps = _drift(gen, noise=1.0)
    times = torch.tensor([0.0, 1, 3, 4, 7, 8, 9, 12, 13, 15, 16, 17, 20, 21, 22, 25, 26, 28, 29, 30])
    col = SWAGCollector({"theta": snaps[0]}, max_rank=2)
    trend = dg.TrendMoments(col.dim)
    for t, s in zip(times, snaps):
        trend.observe(s.double() - col.mean, t=float(t))
        col.collect({"theta": s})
    batch = dg.trend_share_of(torch.stack(snaps), times)
    assert trend.share(col.m2) == pytest.approx(batch, rel=1e-10)
    # and by hand on a tiny case: x = (0, 1, 5) at t = (0, 1, 2): S_tt = 2, S_tx = 5, S_xx = 14 -> 25 / 28
    assert dg.trend_share_of(torch.tensor([[0.0], [1.0], [5.0]])) == pytest.approx(25 / 28, rel=1e-12)


def test_drift_is_flagged_with_the_top_direction_along_the_drift():
    start, snaps = _drift(torch.Generator().manual_seed(1))
    for use_trend in (True, False):  # all snapshots (TrendMoments) or the kept deviations only
        d = _diag(start, snaps, use_trend)
        assert d.trend_share > 0.99
        assert d.drift_dominated
        assert d.top_direction_cosine > 0.99  # oriented forward in time: the drift points away from the start
        assert d.top_direction_share > 0.99


def test_stationary_sequence_is_not_flagged_and_its_top_direction_is_unrelated():
    start, snaps = _stationary(torch.Generator().manual_seed(2))
    for use_trend in (True, False):
        d = _diag(start, snaps, use_trend)
        # expectation 1 / (n - 1) = 0.053 (snapshots) or 1 / (K - 1) (deviations); far below the threshold
        assert d.trend_share == pytest.approx(d.trend_share_stationary, rel=0.2)
        assert not d.drift_dominated
        assert abs(d.top_direction_cosine) < 0.1  # ~ N(0, 1/D): sd 0.016


def test_threshold_never_flags_five_snapshots_or_fewer():
    assert dg.drift_threshold(3) == 2.0 and dg.drift_threshold(5) == 1.0
    assert dg.drift_threshold(11) == 0.4 and dg.drift_threshold(17) == 0.25 and dg.drift_threshold(41) == 0.25
    line = [torch.tensor([float(i), 2.0 * i]) for i in range(5)]  # an exact line: share 1, but n = 5
    col, trend = _collect(line)
    assert trend.share(col.m2) == pytest.approx(1.0)
    d = dg.diagnose(deviations=col.deviation_matrix(), mean=col.mean, start=line[0].double(),
                    variance=col.diagonal_variance(), variance_floor=1e-30, trend=trend, m2=col.m2)
    assert not d.drift_dominated


def test_floor_share_is_exact_on_a_constructed_case():
    gen = torch.Generator().manual_seed(3)
    moving = torch.zeros(1000, dtype=torch.bool)
    moving[torch.randperm(1000, generator=gen)[:700]] = True  # 300 coordinates never move
    base = torch.randn(1000, generator=gen, dtype=torch.float64)
    snaps = [base + moving * torch.randn(1000, generator=gen, dtype=torch.float64) for _ in range(10)]
    col, _ = _collect(snaps, floor=1e-8)
    assert dg.floor_share(col.diagonal_variance(), 1e-8) == 0.3
    # the stored SWAG prior (float32, diagonal halved) gives the same share from its metadata
    prior = col.prior(metadata={"swag": {"variance_floor": 1e-8}})
    d = dg.prior_diagnostics(prior, {"theta": base.float()})
    assert d.floor_share == 0.3
    assert d.median_variance == pytest.approx(0.5 * float(col.diagonal_variance().median()), rel=1e-6)


def test_prior_diagnostics_match_the_collector_and_go_into_metadata():
    start, snaps = _drift(torch.Generator().manual_seed(4))
    col, _ = _collect(snaps)
    prior = col.prior(metadata={"swag": {"variance_floor": col.variance_floor}})
    from_prior = dg.prior_diagnostics(prior, {"theta": start.float()})
    from_collector = _diag(start, snaps, use_trend=False)
    assert from_prior.trend_share == pytest.approx(from_collector.trend_share, rel=1e-4)
    assert from_prior.top_direction_cosine == pytest.approx(from_collector.top_direction_cosine, abs=1e-4)
    meta = from_prior.to_metadata()
    assert meta["drift_dominated"] is True and meta["trend_source"] == "deviations"
    with pytest.raises(ValueError, match="no time order"):
        dg.prior_diagnostics(prior.truncate(3, how="svd"), {"theta": start.float()})


def test_trend_moments_survive_a_state_round_trip():
    start, snaps = _drift(torch.Generator().manual_seed(5), noise=1.0)
    col, trend = _collect(snaps[:7])
    again = dg.TrendMoments(col.dim)
    again.load_state_dict(trend.state_dict())
    for i, s in enumerate(snaps[7:], start=7):
        again.observe(s.double() - col.mean, t=i)
        col.collect({"theta": s})
    assert again.share(col.m2) == pytest.approx(dg.trend_share_of(torch.stack(snaps)), rel=1e-10)


def test_false_alarm_rate_in_the_worst_case_matches_the_beta_law():
    # all variance along one direction: the trend share is R^2 of a line fit, Beta(1/2, (n - 2)/2);
    # P(R^2 > 0.25 | n = 20) = 0.0248 (scipy.stats.beta.sf). 4000 sequences: binomial sd 0.0025.
    gen = torch.Generator().manual_seed(6)
    flagged = 0
    for _ in range(4000):
        share = dg.trend_share_of(torch.randn(N_SNAP, 1, generator=gen, dtype=torch.float64))
        flagged += share > dg.drift_threshold(N_SNAP)
    assert abs(flagged / 4000 - 0.0248) < 0.008
