"""The audit's statistics: the paired t-test of one claim part, its verdict, the reason in words, Holm's
correction and how the verdicts of a claim's parts combine.

Test. The two-sided paired t-test over pairs (``scipy.stats.ttest_1samp`` of the paired differences, which is
``ttest_rel``), with its (1 - alpha) confidence interval. Why the t-test and not Wilcoxon's signed-rank test:
the paper (and our default) has 5 seeds per setting, and with 5 pairs the exact two-sided signed-rank test
cannot give p below 2/32 = 0.0625, so it could never support anything at alpha = 0.05. The t-test assumes
roughly normal differences, which 5 pairs cannot check, so the signed-rank p-value over the same pairs is
reported beside it as a robustness check.

Verdict of a part: a contrast x (one value per pair), the claim ``direction * (mean(x) - margin) > 0``, alpha
and the smallest relevant effect delta of the metric (the config's ``audit`` section). In this order:
  supported           the mean has the claimed sign (relative to the margin) and p < alpha;
  contradicted        it has the opposite sign and p < alpha: a significant effect against the claim;
  no relevant effect  (claims of a difference, margin 0) p >= alpha and the whole (1 - alpha) confidence
                      interval lies within +-delta: whatever the effect is, it is smaller than the smallest
                      relevant one in either direction (equivalence);
  inconclusive        neither: the interval still reaches beyond +-delta (the text says on which side, and
                      whether the test was underpowered when a power function is given), and always with
                      fewer than 2 pairs.
A significant effect whose whole interval lies within +-delta keeps its verdict (supported / contradicted) and
its reason says that the effect is smaller than the smallest relevant one.

Degenerate pairs: when every pair has the same difference the standard deviation is 0, so t and Cohen's d_z
are undefined; d_z is then NaN with ``degenerate`` saying so, p is 0 (the limit of an infinite t), or 1 when
that difference equals the margin, and the interval has width 0.

Claim verdict from its parts (a claim is a conjunction: C1 rises AND saturates, C3 SGD AND BNN, ...):
supported when every part in the verdict is supported; else contradicted when any part is contradicted; else
no relevant effect when any part shows no relevant effect; else inconclusive (also with no parts).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping

import numpy as np

SUPPORTED, CONTRADICTED, NO_EFFECT, INCONCLUSIVE = "supported", "contradicted", "no relevant effect", "inconclusive"
#: every verdict, strongest first (the order of :func:`combine`)
VERDICTS = (SUPPORTED, CONTRADICTED, NO_EFFECT, INCONCLUSIVE)

#: differences this small are floating-point noise (metrics are fractions or nats)
TOL = 1e-12

#: A power analysis of one part (issue 12, item 3; built on bayes_transfer.audit.power), passed to
#: ``evaluate_claims(..., power=...)``: ``power(contrast, *, alpha, direction, margin, metric, claim, part)``
#: returns a mapping with any of :data:`POWER_COLUMNS`: ``mde`` the minimum detectable effect at this number of
#: pairs (the contrast's native units), ``power_at_target`` the power against the paper's effect,
#: ``pairs_needed`` the pairs that would detect it, and ``power_note`` one sentence that an inconclusive verdict's
#: reason ends with (e.g. whether the test could have seen the paper's effect). Without it those columns are
#: empty and the reason says "power not assessed".
PowerFn = Callable[..., Mapping]
POWER_COLUMNS = ("mde", "power_at_target", "pairs_needed", "power_note")


def paired_test(contrast, *, alpha: float, direction: int = 1, margin: float = 0.0,
                relevance: float | None = None, wilcoxon: bool = True) -> dict:
    """Two-sided paired t-test of mean(contrast) against ``margin`` and the verdict of the claim
    ``direction * (mean - margin) > 0`` (module docstring). ``contrast`` holds one paired difference per pair
    (native units); ``relevance`` is delta, the smallest relevant effect (None: no equivalence verdict)."""
    x = np.asarray(contrast, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    out = {"n_pairs": n, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "d_z": np.nan,
           "p_value": np.nan, "p_wilcoxon": np.nan, "degenerate": ""}
    if n < 2:
        out |= {"mean": float(x.mean()) if n else np.nan, "verdict": INCONCLUSIVE, "rule": "none",
                "within_delta": False}
        return out | {"reason": reason_text("none", out, alpha=alpha, relevance=relevance)}
    from scipy import stats  # heavy; only needed here

    mean = float(x.mean())
    y = x - margin
    sd = float(y.std(ddof=1))
    if sd <= TOL * max(1.0, abs(float(y.mean()))) or not math.isfinite(sd):  # all differences equal
        zero = abs(float(y.mean())) <= TOL  # rounding noise of equal values counts as no difference
        p, half = (1.0 if zero else 0.0), 0.0
        out["degenerate"] = (f"all {n} paired differences equal{' the margin' if zero and margin else ''} (SD 0): "
                             f"d_z undefined, p = {p:g}")
    else:
        se = sd / math.sqrt(n)
        p = float(2 * stats.t.sf(abs(float(y.mean())) / se, n - 1))  # = scipy.stats.ttest_1samp(y, 0)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
        out["d_z"] = float(y.mean()) / sd
    if wilcoxon:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # exact for untied, non-zero differences (n <= 50); otherwise the normal approximation with
                # tie correction (scipy's default would run a slow permutation test there)
                nz = np.abs(y[y != 0])
                exact = len(nz) == len(y) <= 50 and len(np.unique(nz)) == len(nz)
                out["p_wilcoxon"] = (float(stats.wilcoxon(y, method="exact" if exact else "approx").pvalue)
                                     if len(nz) else 1.0)
            except ValueError:
                pass
    out |= {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}
    verdict, rule = decide(out, alpha=alpha, direction=direction, margin=margin, relevance=relevance)
    out |= {"verdict": verdict, "rule": rule, "within_delta": within(out, relevance, margin)}
    return out | {"reason": reason_text(rule, out, alpha=alpha, direction=direction, relevance=relevance)}


def within(test: Mapping, relevance: float | None, margin: float = 0.0) -> bool:
    """Whether the whole confidence interval lies strictly within +-relevance (claims of a difference only)."""
    if relevance is None or margin != 0 or not relevance > 0 or test["ci_low"] != test["ci_low"]:
        return False
    return -relevance < test["ci_low"] and test["ci_high"] < relevance


def decide(test: Mapping, *, alpha: float, direction: int, margin: float,
           relevance: float | None) -> tuple[str, str]:
    """(verdict, rule) of a tested part; rules: sign, against, equivalent, undecided, none (< 2 pairs)."""
    if test["n_pairs"] < 2:
        return INCONCLUSIVE, "none"
    signed = direction * (test["mean"] - margin)
    if test["p_value"] < alpha and signed > 0:
        return SUPPORTED, "sign"
    if test["p_value"] < alpha and signed < 0:
        return CONTRADICTED, "against"
    if within(test, relevance, margin):
        return NO_EFFECT, "equivalent"
    return INCONCLUSIVE, "undecided"


def reason_text(rule: str, test: Mapping, *, alpha: float, direction: int = 1, relevance: float | None,
                scale: float = 1.0, unit: str = "", power_note: str | None = None) -> str:
    """Why a part got its verdict, in words (``relevance`` in native units, shown times ``scale``).
    ``power_note``: what a power analysis says about an inconclusive test (None: not assessed)."""
    if rule == "none":
        return "no runs" if test["n_pairs"] == 0 else "only 1 pair: no test possible"
    level = f"{1 - alpha:.0%} CI"
    delta = "" if relevance is None else f"{relevance * scale:g} {unit}".strip()
    small = (f"; the whole {level} lies within ±{delta}: smaller than the smallest relevant effect"
             if test.get("within_delta") else "")
    if rule == "sign":
        return f"claimed sign, p < {alpha:g}{small}"
    if rule == "against":
        return f"significant effect against the claim (opposite sign, p < {alpha:g}){small}"
    p = f"p = {test['p_value']:.3g} >= {alpha:g}"
    if rule == "equivalent":
        return f"{p}; the whole {level} lies within ±{delta} (the smallest relevant effect)"
    if rule != "undecided":
        raise ValueError(f"unknown verdict rule {rule!r}")
    text = p
    if relevance is not None and relevance > 0 and test["ci_low"] == test["ci_low"]:
        lo, hi = sorted((direction * test["ci_low"], direction * test["ci_high"]))  # claimed direction positive
        claimed, against = hi >= relevance, lo <= -relevance
        if claimed and against:
            text += f"; the {level} reaches beyond ±{delta} in both directions"
        elif against:
            text += (f"; the {level} reaches beyond {delta} against the claim (a relevant effect in the claimed "
                     "direction is excluded)")
        elif claimed:
            text += (f"; the {level} reaches beyond {delta} in the claimed direction (a relevant effect against "
                     "the claim is excluded)")
    return text + f"; {power_note or 'power not assessed'}"


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.where(np.isfinite(p))[0]
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def combine(verdicts: Iterable[str]) -> str:
    """A claim's verdict from its parts' (module docstring): all supported -> supported; else any contradicted
    -> contradicted; else any no relevant effect -> no relevant effect; else inconclusive."""
    verdicts = list(verdicts)
    unknown = set(verdicts) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}; expected some of {VERDICTS}")
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    for v in (CONTRADICTED, NO_EFFECT):
        if v in verdicts:
            return v
    return INCONCLUSIVE
