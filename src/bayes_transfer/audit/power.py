"""Statistical power of the audit's test: the two-sided paired t-test over ``n`` pairs.

For pairs whose differences have standard deviation ``sd``, a true mean difference ``effect`` has the
standardised size ``d_z = effect / sd`` (Cohen's d for paired samples). The t statistic then follows the
noncentral t distribution with ``n - 1`` degrees of freedom and noncentrality ``d_z * sqrt(n)``, and the
power of the two-sided test at level ``alpha`` is

    P(|T| > t_crit) = nct.sf(t_crit, n - 1, d_z sqrt(n)) + nct.cdf(-t_crit, n - 1, d_z sqrt(n)),
    t_crit = t.ppf(1 - alpha / 2, n - 1)

(both tails count, as in G*Power's "t tests - Means: Difference between two dependent means (matched
pairs)"; the lower tail is computed as ``nct.sf(t_crit, n - 1, -d_z sqrt(n))``, the same number, because
scipy's ``nct.cdf`` returns nan far in the left tail). Nothing here is approximated:
:func:`minimum_detectable_effect` inverts the power in ``d_z`` by root finding and :func:`pairs_needed`
searches the smallest integer ``n``. :func:`power_summary` does both for a set of observed paired differences
and words the result (:meth:`PowerSummary.note`: is the test powered for the paper's effect?).

The audit uses the *observed* SD of a part's paired differences in place of the true one (the usual
post-hoc reading: "with this spread, what could these pairs have detected?"). Degenerate inputs give a
result whose ``value`` is ``inf`` or ``nan`` and whose ``reason`` says why, never an exception:

* fewer than 2 pairs: no t-test exists, so no effect is detectable (``inf``);
* ``sd == 0`` (every paired difference equal): the t statistic is infinite or undefined and the observed
  spread says nothing about the true one (``nan``);
* a target effect of 0: no number of pairs detects it (``inf``), and a non-finite one gives ``nan``.

Bad arguments (alpha or power outside (0, 1), power <= alpha, a negative SD) raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

__all__ = ["DEFAULT_POWER", "MAX_PAIRS", "ZERO_SD_TOL", "Detectable", "Needed", "PowerSummary", "paired_power",
           "minimum_detectable_effect", "pairs_needed", "power_summary"]

#: the conventional target power (Cohen 1988)
DEFAULT_POWER = 0.8
#: the largest number of pairs :func:`pairs_needed` searches
MAX_PAIRS = 10**7
#: :func:`power_summary` treats an observed SD <= this times max(1, |mean|) as 0 (rounding noise of equal
#: differences), the rule of the audit's ``paired_test`` (``bayes_transfer.audit.stats.TOL``)
ZERO_SD_TOL = 1e-12


@dataclass(frozen=True)
class _Planned:
    """The setting a power calculation answers for: the SD of the paired differences, the test's level and
    the power aimed at; ``reason`` is empty when the answer is a finite number, otherwise it says why not."""

    sd: float
    alpha: float
    power: float
    reason: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Detectable(_Planned):
    """The minimum detectable effect at ``n`` pairs: ``value`` in the units of ``sd``, ``d_z`` = value / sd."""

    value: float
    d_z: float
    n: int


@dataclass(frozen=True)
class Needed(_Planned):
    """The smallest number of pairs ``n`` (``inf``/``nan`` when there is none) whose test reaches ``power``
    against ``effect``; ``achieved`` is the power at that ``n`` (nan if none)."""

    n: float
    achieved: float
    effect: float


@dataclass(frozen=True)
class PowerSummary:
    """What :func:`power_summary` reports for one set of paired differences."""

    n_pairs: int
    sd: float
    alpha: float
    power: float
    detectable: Detectable
    target_effect: float | None = None
    power_at_target: float | None = None
    needed: Needed | None = None

    @property
    def adequate(self) -> bool | None:
        """Whether the test had at least the target power against the target effect (None: no target, or the
        power is undefined)."""
        if self.power_at_target is None or not math.isfinite(self.power_at_target):
            return None
        return self.power_at_target >= self.power

    def note(self, scale: float = 1.0, unit: str = "") -> str:
        """One sentence on the power, effects shown times ``scale`` in ``unit`` (e.g. 100, "pp")."""
        def fmt(v: float) -> str:
            return f"{v * scale:.3g} {unit}".strip() if math.isfinite(v) else str(v)

        levels = f"alpha {self.alpha:g}, power {self.power:g}"
        d = self.detectable
        mde = (f"minimum detectable effect {fmt(d.value)} at {self.n_pairs} pairs ({levels})" if not d.reason
               else f"no minimum detectable effect ({d.reason})")
        if self.target_effect is None:
            return mde
        target = f"the paper's effect of {fmt(abs(self.target_effect))}"
        needed = self.needed
        if self.adequate is None:
            return f"{mde}; power against {target} not defined ({needed.reason})"
        how_many = f"{int(needed.n)} pairs would reach {self.power:g}" if not needed.reason else needed.reason
        if self.adequate:
            return f"{mde}; power {self.power_at_target:.2f} against {target}: the test could have seen it"
        return f"{mde}; power {self.power_at_target:.2f} against {target}: underpowered ({how_many})"

    def as_dict(self, scale: float = 1.0, unit: str = "") -> dict:
        """Flat columns for a results table (``None`` where no target effect was given), effects in the
        units of the differences; ``power_note`` is :meth:`note` (``scale``/``unit`` for its text only)."""
        out = {"n_pairs": self.n_pairs, "sd": self.sd, "alpha": self.alpha, "power": self.power,
               "mde": self.detectable.value, "mde_d_z": self.detectable.d_z,
               "mde_reason": self.detectable.reason, "target_effect": self.target_effect,
               "power_at_target": self.power_at_target}
        needed = self.needed
        out |= {"pairs_needed": None if needed is None else needed.n,
                "pairs_needed_reason": None if needed is None else needed.reason,
                "power_note": self.note(scale, unit)}
        return out


def _check_levels(alpha: float, power: float | None = None) -> None:
    if not (isinstance(alpha, (int, float, np.floating)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    if power is not None:
        if not (isinstance(power, (int, float, np.floating)) and 0 < power < 1):
            raise ValueError(f"power: expected a number in (0, 1), got {power!r}")
        if power <= alpha:
            raise ValueError(f"power: expected a target above alpha = {alpha:g} (the power against a zero "
                             f"effect), got {power!r}")


def _check_sd(sd: float) -> float:
    sd = float(sd)
    if sd < 0:
        raise ValueError(f"sd: expected the standard deviation of the paired differences (>= 0), got {sd!r}")
    return sd


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n: expected an integer number of pairs, got {n!r}")
    return int(n)


def _power_dz(d_z: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test for standardised effect ``d_z`` and ``n >= 2``."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(d_z) * math.sqrt(n)
    if nc == 0:
        return float(alpha)
    # the lower tail P(T < -crit) as P(-T > crit), -T ~ nct(df, -nc): scipy's nct.cdf far in the left tail
    # returns nan for some large nc, its sf at -nc gives the (negligible) value
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs against a true mean
    difference ``effect`` when the differences have SD ``sd`` (``nan`` when ``n < 2`` or ``sd == 0``)."""
    _check_levels(alpha)
    n = _check_n(n)
    sd = _check_sd(sd)
    effect = float(effect)
    if n < 2 or not math.isfinite(sd) or sd == 0 or not math.isfinite(effect):
        return math.nan
    return _power_dz(effect / sd, n, alpha)


def _mde_dz(n: int, alpha: float, power: float) -> float:
    def gap(d: float) -> float:
        return _power_dz(d, n, alpha) - power

    normal = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / math.sqrt(n)
    high = max(2.0 * normal, 1e-3)
    while gap(high) < 0:  # the t-test needs more than the normal approximation; at n = 2 much more
        high *= 2.0
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12, rtol=1e-12))


def minimum_detectable_effect(n: int, sd: float, alpha: float = 0.05,
                              power: float = DEFAULT_POWER) -> Detectable:
    """The smallest true mean difference (in the units of ``sd``) that the two-sided paired t-test with
    ``n`` pairs detects with probability ``power`` at level ``alpha``.

    With ``sd == 0`` the value is ``nan`` but ``d_z`` is still the detectable size in SD units."""
    _check_levels(alpha, power)
    n = _check_n(n)
    sd = _check_sd(sd)
    if n < 2:
        return Detectable(value=math.inf, d_z=math.inf, n=n, sd=sd, alpha=alpha, power=power, reason=
                          f"{n} pair{'s' if n != 1 else ''}: the paired t-test needs at least 2, so no effect "
                          "is detectable")
    if not math.isfinite(sd):
        return Detectable(value=math.nan, d_z=math.nan, n=n, sd=sd, alpha=alpha, power=power,
                          reason=f"the SD of the paired differences is {sd}")
    d_z = _mde_dz(n, alpha, power)
    if sd == 0:
        return Detectable(value=math.nan, d_z=d_z, n=n, sd=sd, alpha=alpha, power=power, reason=
                          "the paired differences have SD 0 (all equal): a degenerate t statistic, and the "
                          "observed spread does not estimate the true one")
    return Detectable(value=d_z * sd, d_z=d_z, n=n, sd=sd, alpha=alpha, power=power)


def pairs_needed(effect: float, sd: float, alpha: float = 0.05, power: float = DEFAULT_POWER,
                 max_pairs: int = MAX_PAIRS) -> Needed:
    """The smallest number of pairs (>= 2) for which the two-sided paired t-test at level ``alpha`` detects a
    true mean difference ``effect`` with probability at least ``power``, for differences of SD ``sd``.

    The sign of ``effect`` does not matter (two-sided test). Pass ``sd = 1`` to give ``effect`` as ``d_z``.
    """
    _check_levels(alpha, power)
    sd = _check_sd(sd)
    effect = float(effect)
    max_pairs = _check_n(max_pairs)

    def none(value: float, reason: str) -> Needed:
        return Needed(n=value, achieved=math.nan, effect=effect, sd=sd, alpha=alpha, power=power, reason=reason)

    if not math.isfinite(effect):
        return none(math.nan, f"the target effect is {effect}")
    if not math.isfinite(sd):
        return none(math.nan, f"the SD of the paired differences is {sd}")
    if sd == 0:
        return none(math.nan, "the paired differences have SD 0 (all equal): the power is undefined")
    if effect == 0:
        return none(math.inf, "a zero effect is not detectable: the power stays at alpha for every n")
    d_z = abs(effect) / sd
    if _power_dz(d_z, max_pairs, alpha) < power:
        return none(math.inf, f"more than {max_pairs} pairs would be needed (d_z = {d_z:.3g})")
    low, high = 1, 2  # invariant: power(low) < target (n = 1 has no test), power(high) >= target
    while _power_dz(d_z, high, alpha) < power:
        low, high = high, min(2 * high, max_pairs)
    while high - low > 1:
        mid = (low + high) // 2
        if _power_dz(d_z, mid, alpha) >= power:
            high = mid
        else:
            low = mid
    return Needed(n=high, achieved=_power_dz(d_z, high, alpha), effect=effect, sd=sd, alpha=alpha, power=power)


def power_summary(differences, alpha: float = 0.05, power: float = DEFAULT_POWER,
                  target_effect: float | None = None) -> PowerSummary:
    """Power of the paired t-test over the given paired differences (non-finite ones are dropped, as in the
    audit's ``paired_test``): the minimum detectable effect at their number, from their observed SD; and, for
    a ``target_effect`` (e.g. the paper's, in the same units), the power against it and the pairs needed."""
    _check_levels(alpha, power)
    x = np.asarray(differences, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    sd = float(x.std(ddof=1)) if n >= 2 else math.nan
    if n >= 2 and sd <= ZERO_SD_TOL * max(1.0, abs(float(x.mean()))):
        sd = 0.0
    detectable = minimum_detectable_effect(n, sd, alpha, power)  # n < 2: inf, whatever the SD
    if target_effect is None:
        return PowerSummary(n, sd, alpha, power, detectable)
    target_effect = float(target_effect)
    at_target = paired_power(target_effect, sd, n, alpha) if n >= 2 else math.nan
    needed = pairs_needed(target_effect, sd, alpha, power) if n >= 2 else \
        Needed(n=math.nan, achieved=math.nan, effect=target_effect, sd=sd, alpha=alpha, power=power, reason=
               f"{n} pair{'s' if n != 1 else ''}: no SD of the paired differences to plan from")
    return PowerSummary(n, sd, alpha, power, detectable, target_effect, at_target, needed)
