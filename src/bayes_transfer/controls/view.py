"""What each control must show, claim by claim, and the rows of the audit's "Pipeline controls" table.

The positive control must have C3 and C10 supported (C4 needs Bayesian averaging to help, which the control's
task does not build in: reported, not required; docs/controls.md); the negative control must have none of C3,
C4, C10 supported. :func:`outcome` is that rule for one control (``python -m bayes_transfer.controls`` and the
workflow's controls rule use it); :func:`control_rows` gives one row per control and claim for the audit's
pages (:func:`bayes_transfer.audit.render.controls_overview`). No torch here: the audit imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

__all__ = ["SUPPORTED", "EXPECTED", "REPORTED", "CONTROLS_NOTE", "claim_as_expected", "outcome", "control_rows"]

SUPPORTED = "supported"  # bayes_transfer.audit.stats.SUPPORTED (not imported: the audit imports this module)
NOT_SUPPORTED = "not supported"
REPORTED = "reported (not required)"
#: per control, per claim: the verdict it must have ("not supported": anything but supported), or REPORTED
EXPECTED = {
    "positive": {"C3": SUPPORTED, "C4": REPORTED, "C10": SUPPORTED},
    "negative": {"C3": NOT_SUPPORTED, "C4": NOT_SUPPORTED, "C10": NOT_SUPPORTED},
}
#: the sentence the audit's pages carry under the table
CONTROLS_NOTE = (
    "Pipeline controls (docs/controls.md): a synthetic transfer task run through the same stages (pre-train, "
    "SWAG, tune, fit) and judged by the same claim code. Positive control (the learned prior carries the "
    "information the downstream data lack): C3 and C10 must be supported, C4 is reported (Bayesian averaging "
    "is not built into it); negative control (a prior learned on an unrelated subspace): none of C3, C4, C10 "
    "may be supported. If the positive control fails, the pipeline could not have detected the learned prior's "
    "effect, so an unsupported C3/C10 on this tier says nothing about the paper; if the negative control fails, "
    "the pipeline finds an effect where there is none, and a supported C3/C4/C10 here is not evidence either.")


def claim_as_expected(variant: str, claim: str, verdict: str | None) -> str:
    """'yes' / 'no' for a required claim, REPORTED for one that is only reported."""
    want = EXPECTED[variant][claim]
    if want == REPORTED:
        return REPORTED
    if want == SUPPORTED:
        return "yes" if verdict == SUPPORTED else "no"
    return "yes" if verdict != SUPPORTED else "no"


def outcome(variant: str, verdicts: Mapping[str, str]) -> dict:
    """``{"passed": bool, "why": str}`` of one control from its claims' verdicts (a claim absent: no verdict)."""
    if variant not in EXPECTED:
        raise ValueError(f"control variant must be one of {sorted(EXPECTED)}, got {variant!r}")
    bad = [c for c in EXPECTED[variant] if claim_as_expected(variant, c, verdicts.get(c)) == "no"]
    if variant == "positive":
        return {"passed": not bad, "why": ("C3 and C10 supported" if not bad else
                                            "not supported: " + ", ".join(f"{c} {verdicts.get(c)}" for c in bad))}
    return {"passed": not bad, "why": ("none of C3, C4, C10 supported" if not bad else
                                        "supported on an unrelated prior: " + ", ".join(bad))}


def control_rows(controls: pd.DataFrame) -> list[dict]:
    """One row per control (in the table's order) and expected claim: the claims.csv row of the controls rule
    (``control`` plus the audit's claim columns) with ``expected``, ``as_expected`` and the control's
    ``passed``; a claim the table lacks gets the verdict 'missing'."""
    if "control" not in controls.columns:
        raise ValueError("controls table: expected a `control` column (results/controls/claims.csv of the "
                         f"controls rule); got columns {list(controls.columns)}")
    rows = []
    for variant in dict.fromkeys(controls["control"]):
        if variant not in EXPECTED:
            raise ValueError(f"controls table: unknown control {variant!r}; expected some of {sorted(EXPECTED)}")
        mine = controls[controls["control"] == variant]
        by_claim = {r["claim"]: r for r in mine.to_dict("records")}
        passed = outcome(variant, {c: r["verdict"] for c, r in by_claim.items()})["passed"]
        for claim in EXPECTED[variant]:
            r = by_claim.get(claim) or {"claim": claim, "verdict": "missing", "decisive_part": claim,
                                        "effect": float("nan"), "unit": "", "ci_low": float("nan"),
                                        "ci_high": float("nan"), "p_value": float("nan"), "n_pairs": 0}
            rows.append({**r, "control": variant, "expected": EXPECTED[variant][claim],
                         "as_expected": claim_as_expected(variant, claim, r["verdict"]), "passed": passed})
    return rows
