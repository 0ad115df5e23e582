"""Our verdicts beside the published reproductions' and another tier's (bayes_transfer.audit.tiers), on the
claims overview of the audit's pages."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from bayes_transfer.audit import reference
from bayes_transfer.audit.run import run_audit, write_audit
from bayes_transfer.audit.tiers import NOT_RUN, TIER_SCOPE, beside, read_tier_verdicts, shown_verdict, tier_label
from test_audit import effect_runs


def test_the_tier_follows_the_dataset():
    assert tier_label("digits") == "default" and tier_label("fashion_mnist") == "fashion"
    assert tier_label("cifar10") == "paper scale" and tier_label("flowers102") == "paper scale"
    assert set(TIER_SCOPE) == {"default", "fashion", "paper scale"}


def test_a_claim_whose_every_part_found_no_runs_shows_as_not_run():
    no_runs = "C9 SGD: inconclusive (no runs: no method sgd_learned_prior); C9 BNN: inconclusive (no runs: none)"
    assert shown_verdict({"verdict": "inconclusive", "why": no_runs, "parts": 2}) == NOT_RUN
    # one of two parts had runs: a real inconclusive verdict
    some = "C9 SGD: inconclusive (no runs: none); C9 BNN: inconclusive (p = 0.3 >= 0.05)"
    assert shown_verdict({"verdict": "inconclusive", "why": some, "parts": 2}) == "inconclusive"
    assert shown_verdict({"verdict": "contradicted", "why": "C4: contradicted (p = 0.01)", "parts": 1}) == \
        "contradicted"


def _claims_file(path, verdicts: dict[str, str], why: str = "x (p = 0.5)") -> str:
    pd.DataFrame({"claim": list(verdicts), "verdict": list(verdicts.values()), "why": why, "parts": 1}).to_csv(
        path, index=False)
    return str(path)


def test_another_tiers_claims_file_is_read_and_checked(tmp_path):
    good = _claims_file(tmp_path / "fashion.csv", {"C3": "supported", "C4": "contradicted"})
    assert read_tier_verdicts("fashion", good).to_dict() == {"C3": "supported", "C4": "contradicted"}
    bad = _claims_file(tmp_path / "bad.csv", {"C3": "maybe"})
    with pytest.raises(ValueError, match=r"audit.tiers.fashion: .*bad.csv: verdict 'maybe' for C3; expected one of"):
        read_tier_verdicts("fashion", bad)
    (tmp_path / "runs.csv").write_text("method,seed\nsgd,0\n")
    with pytest.raises(ValueError, match=r"runs.csv: no column \['claim', 'verdict'\]; expected the "
                                         r"results/audit/claims.csv"):
        read_tier_verdicts("fashion", tmp_path / "runs.csv")
    with pytest.raises(ValueError, match=r"audit.tiers.fashion: .*missing.csv: not a readable claims table"):
        read_tier_verdicts("fashion", tmp_path / "missing.csv")


def test_beside_puts_the_reproductions_and_each_tier_in_their_columns():
    claims = pd.DataFrame({"claim": ["C1", "C3", "R1"], "verdict": ["inconclusive", "supported", "supported"],
                           "why": ["C1a: inconclusive (no runs: none)", "", ""], "parts": [1, 1, 1]})
    others = {"fashion": pd.Series({"C3": "contradicted", "C1": "no relevant effect"})}
    table = beside(claims, "default", others).set_index("claim")
    assert list(table.columns) == ["Flowers-102 report", "Harvey et al. (TMLR 2024)", "ours (default)",
                                   "ours (fashion)"]
    rep = reference.reproductions().set_index("claim")
    assert table.loc["C3", "Flowers-102 report"] == rep.loc["C3", "flowers_verdict"] == "supported"
    assert table.loc["C3", "Harvey et al. (TMLR 2024)"] == rep.loc["C3", "harvey_verdict"] == "partly supported"
    assert table.loc["R1", "Flowers-102 report"] == "not examined"  # the related methods' claims: no source
    assert table["ours (default)"].to_dict() == {"C1": NOT_RUN, "C3": "supported", "R1": "supported"}
    assert table["ours (fashion)"].to_dict() == {"C1": "no relevant effect", "C3": "contradicted", "R1": NOT_RUN}
    with pytest.raises(ValueError, match=r"audit.tiers.default: this run is the 'default' tier"):
        beside(claims, "default", {"default": others["fashion"]})


def test_the_pages_show_the_tier_the_reproductions_and_the_other_tier(tmp_path):
    runs = effect_runs("bnn_learned_prior", "sgd_transfer", "true")
    fashion = read_tier_verdicts("fashion", _claims_file(tmp_path / "f.csv", {"C3": "contradicted"}))
    result = run_audit({"runs": runs}, tier="default", other_tiers={"fashion": fashion})
    outputs = {name: tmp_path / f"{name}.out" for name in ("claims_md", "claims_html", "overview_html")}
    write_audit(result, outputs)
    front = outputs["overview_html"].read_text()
    table = re.search(r'<table id="audit-claims".*?</table>', front, flags=re.DOTALL).group(0)
    head = re.findall(r"<th>(.*?)</th>", table)
    assert head == ["claim", "what the paper says", "Flowers-102 report", "Harvey et al. (TMLR 2024)",
                    "ours (default)", "ours (fashion)", "numbers behind it (deciding part)"]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    by_claim = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == list(result["claims"]["claim"])
    assert by_claim["C3"][5] == "contradicted" and by_claim["C5"][5] == NOT_RUN
    assert by_claim["C3"][4] == result["claims"].set_index("claim").loc["C3", "verdict"]
    assert '<td class="v-contradicted">contradicted</td>' in table  # the other tier's verdict is coloured too
    assert "These verdicts come from the embedded default" in front and "audit.tiers" in front
    md = outputs["claims_md"].read_text()
    assert "| claim | what the paper says | Flowers-102 report | Harvey et al. (TMLR 2024) | ours (default) |" in md
    # without a tier the overview keeps its former columns
    plain = run_audit({"runs": runs})
    write_audit(plain, {"overview_html": tmp_path / "plain.html"})
    assert "<th>our verdict</th>" in (tmp_path / "plain.html").read_text()
