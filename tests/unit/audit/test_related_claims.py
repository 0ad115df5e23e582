"""The related methods' claims R1 (a BBB prior transfers as well as a SWAG prior) and R2 (variational fine-tuning
with a learned prior beats it with an isotropic prior): each verdict on synthetic runs where it is known, the
power hook, and the audit's result with R1 and R2 appended after C1-C11."""

import pandas as pd
import pytest
from test_audit import base_error, make_runs, shift

from bayes_transfer.audit.paper_effects import power_hook
from bayes_transfer.audit.related_claims import evaluate_related_claims, with_related_claims
from bayes_transfer.audit.settings import AuditSettings
from bayes_transfer.audit.stats import CONTRADICTED, INCONCLUSIVE, NO_EFFECT, SUPPORTED

VI = ["vi_learned_prior", "vi_isotropic_prior"]
LEARNED = ["bnn_learned_prior", "vi_learned_prior"]


def bbb_runs(kind: str, size: float = 0.05) -> pd.DataFrame:
    """SWAG runs under ``supervised`` and BBB runs under ``supervised_bbb``; the BBB prior is better by ``size``
    ('true'), worse ('false'), the same ('equivalent') or the same on average with large swings ('undecidable')."""
    swag = make_runs(lambda p, m, n, s: base_error(n, s), methods=LEARNED)
    bbb = make_runs(lambda p, m, n, s: base_error(n, s) + shift(kind, s, size), methods=LEARNED,
                    pretrainings=("supervised_bbb",))
    return pd.concat([swag, bbb], ignore_index=True)


def vi_runs(kind: str) -> pd.DataFrame:
    """vi_learned_prior better than vi_isotropic_prior by 0.05 ('true'), worse, equivalent or undecidable."""
    return make_runs(lambda p, m, n, s: base_error(n, s) + (shift(kind, s) if m == "vi_learned_prior" else 0.0),
                     methods=VI, pretrainings=("supervised_swag",))


def verdicts(runs: pd.DataFrame) -> dict:
    claims = evaluate_related_claims({"runs": runs}, AuditSettings())["claims"]
    return dict(zip(claims["claim"], claims["verdict"]))


@pytest.mark.parametrize("kind, size, want", [
    ("equivalent", 0.05, SUPPORTED),   # within +-delta: as well as, which is the claim
    ("true", 0.05, SUPPORTED),         # better is also "not worse by delta"
    ("false", 0.05, CONTRADICTED),     # worse by 5 points: significantly beyond delta
    ("undecidable", 0.05, INCONCLUSIVE),
])
def test_bbb_as_well_as_swag_verdicts(kind, size, want):
    assert verdicts(bbb_runs(kind, size))["R1"] == want


def test_bbb_worse_by_less_than_delta_is_supported_and_by_delta_exactly_is_not():
    # worse by 0.2 points (delta = 1 point): still "as well as"
    assert verdicts(bbb_runs("false", 0.002))["R1"] == SUPPORTED
    # worse by 1.5 points: beyond delta
    assert verdicts(bbb_runs("false", 0.015))["R1"] == CONTRADICTED


@pytest.mark.parametrize("kind, want", [
    ("true", SUPPORTED), ("false", CONTRADICTED), ("equivalent", NO_EFFECT), ("undecidable", INCONCLUSIVE),
])
def test_vi_learned_beats_isotropic_verdicts(kind, want):
    assert verdicts(vi_runs(kind))["R2"] == want


def test_r1_pairs_bbb_with_swag_per_method_size_seed_and_counts_a_swag_run_once():
    runs = bbb_runs("true")
    # the same SWAG runs again under a <pretraining>_swag variant (VI at fewer sizes) must not double the pairs
    dup = make_runs(lambda p, m, n, s: base_error(n, s), methods=["vi_learned_prior"], sizes=[10],
                    pretrainings=("supervised_swag",))
    res = evaluate_related_claims({"runs": pd.concat([runs, dup], ignore_index=True)}, AuditSettings())
    r1 = res["parts"].set_index("part").loc["R1"]
    assert r1["n_pairs"] == 2 * 3 * 5  # 2 methods x 3 sizes x 5 seeds
    pairs = res["pairs"][res["pairs"]["part"] == "R1"]
    assert (pairs["contrast"] < 0).all()  # error(BBB) - error(SWAG): BBB better here


def test_without_runs_each_claim_is_inconclusive_saying_why():
    res = evaluate_related_claims({"runs": make_runs(lambda p, m, n, s: 0.1)}, AuditSettings())
    claims = res["claims"].set_index("claim")
    assert (claims["verdict"] == INCONCLUSIVE).all()
    assert "supervised_bbb" not in claims.loc["R1", "why"] and "bbb" in claims.loc["R1", "why"]
    assert "vi_learned_prior" in claims.loc["R2", "why"]


def test_power_hook_applies_and_says_the_paper_gives_no_effect():
    res = evaluate_related_claims({"runs": vi_runs("undecidable")}, AuditSettings(), power=power_hook())
    part = res["parts"].set_index("part").loc["R2"]
    assert part["mde"] > 0
    assert "no effect for this part" in part["power_note"]


def test_with_related_claims_appends_after_the_paper_claims():
    from bayes_transfer.audit.claims import evaluate_claims

    tables = {"runs": pd.concat([bbb_runs("equivalent"), vi_runs("true")], ignore_index=True)}
    base = evaluate_claims(tables, AuditSettings())
    out = with_related_claims(base, tables, AuditSettings())
    assert list(out["claims"]["claim"])[-2:] == ["R1", "R2"]
    assert list(out["claims"].columns) == list(base["claims"].columns)
    assert set(out["parts"]["part"]) >= {"R1", "R2"} and len(out["parts"]) == len(base["parts"]) + 2
