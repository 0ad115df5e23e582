"""Power of the two-sided paired t-test (bayes_transfer.audit.power) against textbook values, a simulation,
the normal-approximation limit, and its degenerate cases.

Textbook values: G*Power 3 (Faul, Erdfelder, Lang & Buchner 2007, Behavior Research Methods 39:175-191),
procedure "t tests - Means: Difference between two dependent means (matched pairs)", two tails, alpha = 0.05,
power 0.8, effect size d_z (Cohen 1988, Statistical Power Analysis for the Behavioral Sciences):
a priori, d_z = 0.5 -> 34 pairs (actual power 0.8078), d_z = 0.8 -> 15 (0.8213), d_z = 1.0 -> 10 (0.8031);
sensitivity at 5 pairs, d_z = 1.682. Recomputed here from the noncentral t (scipy.stats.nct) and, independently
of it, by simulating the t-test (test_power_agrees_with_a_simulated_t_test).
"""

import math

import numpy as np
import pytest
from scipy import stats

from bayes_transfer.audit.power import (DEFAULT_POWER, MAX_PAIRS, minimum_detectable_effect, paired_power,
                                        pairs_needed, power_summary)


@pytest.mark.parametrize("d_z, n, achieved", [(0.5, 34, 0.8078), (0.8, 15, 0.8213), (1.0, 10, 0.8031)])
def test_pairs_needed_matches_g_power(d_z, n, achieved):
    needed = pairs_needed(d_z, sd=1.0, alpha=0.05, power=0.8)
    assert needed.n == n and needed.reason == ""
    assert needed.achieved == pytest.approx(achieved, abs=5e-5)  # G*Power prints 4 decimals
    # one pair fewer falls short of 0.8: n is the smallest
    assert paired_power(d_z, 1.0, n - 1) < 0.8 <= paired_power(d_z, 1.0, n)
    # effect and sd enter only through d_z = effect / sd, and the sign does not matter (two-sided)
    assert pairs_needed(-0.02 * d_z, sd=0.02).n == n


def test_minimum_detectable_effect_matches_g_power_and_inverts_the_power():
    mde = minimum_detectable_effect(5, sd=0.03, alpha=0.05, power=0.8)
    assert mde.d_z == pytest.approx(1.682, abs=5e-4) and mde.reason == ""
    assert mde.value == pytest.approx(mde.d_z * 0.03, rel=1e-12)
    for n in (2, 3, 10, 34, 200):
        m = minimum_detectable_effect(n, sd=1.0)
        assert paired_power(m.d_z, 1.0, n) == pytest.approx(DEFAULT_POWER, abs=1e-9)
    # the n found for an effect has an MDE at or below it, one pair fewer one above it
    assert minimum_detectable_effect(34, 1.0).d_z <= 0.5 < minimum_detectable_effect(33, 1.0).d_z


def test_power_agrees_with_a_simulated_t_test():
    """Rejection rate of scipy's ttest_1samp on simulated normal differences, 40,000 replicates per case: the
    binomial SD of the rate is at most 0.0025, tolerance 0.01 (4 SD)."""
    rng = np.random.default_rng(0)
    for d_z, n in ((0.5, 34), (1.0, 10), (1.5, 5), (0.3, 3)):
        x = rng.normal(loc=d_z, scale=1.0, size=(40_000, n))
        rate = float(np.mean(stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05))
        assert rate == pytest.approx(paired_power(d_z, 1.0, n, alpha=0.05), abs=0.01)


def test_large_n_approaches_the_normal_approximation():
    """For large n the t-test becomes the z-test: MDE * sqrt(n) -> z_{1-alpha/2} + z_{power}, and the relative
    gap shrinks like 1/n (measured: 3.0% at n = 34, 0.1% at 1,000, 1e-5 at 100,000)."""
    for alpha, power in ((0.05, 0.8), (0.01, 0.9)):
        z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
        gaps = [minimum_detectable_effect(n, 1.0, alpha, power).d_z * math.sqrt(n) / z - 1 for n in (10, 100, 1000,
                                                                                                    100_000)]
        assert all(g > 0 for g in gaps)  # the t-test always needs a little more than the z-test
        assert gaps == sorted(gaps, reverse=True)
        assert gaps[-1] < 1e-4
        # pairs needed -> ((z_a + z_b) / d)^2 + z_a^2 / 2 (Guenther 1981, Am. Stat. 35:243, the t-test's
        # correction of the z-test's n), rounded up: the remainder lies in [0, 1)
        z_a = stats.norm.ppf(1 - alpha / 2)
        for d in (0.2, 0.05, 0.02):
            rest = pairs_needed(d, 1.0, alpha, power).n - (z / d) ** 2 - z_a ** 2 / 2
            assert 0 <= rest < 1


def test_power_is_alpha_at_zero_effect_and_rises_with_n_and_effect():
    assert paired_power(0.0, 1.0, 10, alpha=0.05) == pytest.approx(0.05, abs=1e-12)
    by_n = [paired_power(0.5, 1.0, n) for n in (2, 5, 10, 20, 50)]
    by_d = [paired_power(d, 1.0, 10) for d in (0.1, 0.3, 0.6, 1.2)]
    assert by_n == sorted(by_n) and by_d == sorted(by_d)
    # n = 2 (df = 1) at a huge effect: no NaN from the far left tail of the noncentral t
    assert paired_power(50.0, 1.0, 2) == pytest.approx(1.0, abs=1e-3)
    assert minimum_detectable_effect(2, 1.0).d_z == pytest.approx(11.55, abs=0.01)


def test_edge_cases_give_inf_or_nan_with_a_reason():
    one = minimum_detectable_effect(1, 0.1)
    assert one.value == math.inf and "at least 2" in one.reason
    assert minimum_detectable_effect(0, 0.1).value == math.inf
    flat = minimum_detectable_effect(5, 0.0)
    assert math.isnan(flat.value) and "SD 0" in flat.reason and flat.d_z == pytest.approx(1.682, abs=5e-4)
    zero = pairs_needed(0.0, 0.1)
    assert zero.n == math.inf and "zero effect" in zero.reason and math.isnan(zero.achieved)
    assert math.isnan(pairs_needed(0.01, 0.0).n) and "SD 0" in pairs_needed(0.01, 0.0).reason
    assert math.isnan(pairs_needed(math.nan, 0.1).n)
    tiny = pairs_needed(1e-6, 1.0)
    assert tiny.n == math.inf and str(MAX_PAIRS) in tiny.reason
    assert math.isnan(paired_power(0.1, 0.1, 1)) and math.isnan(paired_power(0.1, 0.0, 5))


@pytest.mark.parametrize("call, match", [
    (lambda: minimum_detectable_effect(5, 1.0, alpha=0.0), "alpha"),
    (lambda: minimum_detectable_effect(5, 1.0, alpha=1.5), "alpha"),
    (lambda: minimum_detectable_effect(5, 1.0, power=1.0), "power"),
    (lambda: pairs_needed(0.5, 1.0, alpha=0.2, power=0.1), "above alpha"),
    (lambda: minimum_detectable_effect(5, -1.0), "sd"),
    (lambda: minimum_detectable_effect(5.0, 1.0), "n: expected an integer"),
])
def test_bad_arguments_raise_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_power_summary_of_observed_differences():
    diffs = [0.01, 0.03, -0.01, 0.02, 0.05, math.nan]  # the NaN (a failed pair) is dropped
    s = power_summary(diffs, alpha=0.05, power=0.8, target_effect=0.02)
    x = np.array(diffs[:-1])
    assert s.n_pairs == 5 and s.sd == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert s.detectable.value == pytest.approx(1.682 * x.std(ddof=1), rel=5e-4)
    assert s.power_at_target == pytest.approx(paired_power(0.02, x.std(ddof=1), 5), rel=1e-12)
    assert s.needed.n == pairs_needed(0.02, x.std(ddof=1)).n
    row = s.as_dict()
    assert row["mde"] == s.detectable.value and row["pairs_needed"] == s.needed.n and row["mde_reason"] == ""
    # without a target: no pairs-needed columns
    assert power_summary(x).as_dict()["pairs_needed"] is None
    # equal differences (up to rounding) are the degenerate SD-0 case, not a tiny SD
    flat = power_summary([0.1 + 0.2, 0.3, 0.3], target_effect=0.02)
    assert flat.sd == 0.0 and math.isnan(flat.detectable.value) and math.isnan(flat.needed.n)
    # the note an inconclusive verdict can quote: is the test powered for the paper's effect?
    assert s.adequate is False
    assert s.note(100, "pp").endswith(f"power {s.power_at_target:.2f} against the paper's effect of 2 pp: "
                                      f"underpowered ({int(s.needed.n)} pairs would reach 0.8)")
    assert s.note(100, "pp").startswith(f"minimum detectable effect {s.detectable.value * 100:.3g} pp at 5 pairs")
    big = power_summary(x, target_effect=-0.08)  # two-sided: the sign of the target does not matter
    assert big.adequate is True and big.note().endswith("the test could have seen it")
    assert row["power_note"] == s.note()
    assert flat.adequate is None and "not defined" in flat.note()
    single = power_summary([0.02], target_effect=0.02)
    assert single.detectable.value == math.inf and math.isnan(single.needed.n) and "1 pair" in single.needed.reason
