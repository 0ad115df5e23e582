"""The published reproductions shipped as package data (bayes_transfer.audit.reference.reproductions)."""

from pathlib import Path

import pytest

from bayes_transfer.audit import reference
from bayes_transfer.audit.claims import CLAIMS


def test_reproductions_cover_every_claim_with_allowed_verdicts():
    table = reference.reproductions()
    assert list(table.columns) == reference.REPRODUCTION_COLUMNS
    assert list(table["claim"]) == list(CLAIMS)  # C1-C11, in the audit's order, once each
    for prefix in reference.REPRODUCTION_SOURCES:
        assert set(table[f"{prefix}_verdict"]) <= set(reference.REPRODUCTION_VERDICTS)
        assert (table[f"{prefix}_basis"].str.len() > 0).all()  # every entry says what it rests on


def test_flowers_column_repeats_the_report_verdicts():
    table = reference.reproductions().set_index("claim")
    report = reference.report_verdicts().set_index("claim")
    for claim, row in report.iterrows():
        assert table.loc[claim, "flowers_verdict"] == row["report_verdict"], claim
        assert table.loc[claim, "flowers_basis"] == row["report_basis"], claim
    others = table.drop(index=report.index)
    assert (others["flowers_verdict"] == "not examined").all()


def test_findings_of_harvey_et_al():
    """METHOD_NOTES section 8: mixed gains of the learned prior with MAP (C3, SGD half only), an isotropic
    covariance around the learned mean competitive (C10), the landscape explanation not consistently supported
    (C11); MAP only, so no finding on Bayesian inference (C4, C7, C8)."""
    harvey = reference.reproductions().set_index("claim")["harvey_verdict"]
    assert harvey["C3"] == "partly supported"
    assert harvey["C10"] == "not supported" and harvey["C11"] == "not supported"
    assert (harvey[["C4", "C7", "C8", "C9"]] == "not examined").all()


def test_sources_are_named_beside_the_file():
    text = (Path(reference.__file__).parent / "SOURCE.md").read_text()
    assert "## reproductions.csv" in text
    assert "arXiv 2405.15583" in text and "reproducibility_report_flowers102.txt" in text


def test_a_verdict_outside_the_set_is_an_error_naming_the_file(monkeypatch):
    good = reference._read

    def bad_read(name, columns, **kwargs):
        table = good(name, columns, **kwargs)
        table.loc[table["claim"] == "C4", "harvey_verdict"] = "maybe"
        return table

    monkeypatch.setattr(reference, "_read", bad_read)
    with pytest.raises(ValueError, match=r"reproductions.csv: harvey_verdict 'maybe' for C4; expected one of"):
        reference.reproductions()
