"""The Snakemake HTML report shows the audit: built from a copy of the workflow, opened in headless Chromium,
screenshotted, and checked through the rendered DOM (the claims table and its computed verdicts) and the pixels
(the verdict cells' colours are drawn). Skipped, with the reason, where Chromium is missing and cannot be
installed (set BAYES_TRANSFER_NO_INSTALL=1 to never try `apt-get install chromium`).

It feeds synthetic tidy tables (tests/test_audit.py's builders) to the audit rule alone; the end-to-end smoke
test in tests/test_workflow.py builds the report of a real run and checks that every figure is in it.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import screenshot_report as shot
from test_audit import base_error, lambda_table, landscape_table, make_runs, rank_table, segmentation_table

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def chromium():
    exe = shot.find_chromium(install=not os.environ.get("BAYES_TRANSFER_NO_INSTALL"))
    if exe is None:
        pytest.skip("headless Chromium is not available and could not be installed "
                    "(Debian: apt-get install chromium; or set $CHROMIUM to a Chrome/Chromium binary)")
    probe = shot._run(exe, ["--dump-dom", "about:blank"], timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"{exe} does not start headless here: {probe.stderr[-500:]}")
    return exe


def snakemake(*args, cwd, timeout=900):
    out = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def write_synthetic_tables(tables: Path) -> None:
    """Every tidy table the audit may read, with known effects: the learned prior helps everywhere."""
    tables.mkdir(parents=True, exist_ok=True)

    def err(p, m, n, s):
        e = base_error(n, s)
        if m in ("sgd_learned_prior", "bnn_learned_prior"):
            e -= 0.05
        if m == "bnn_isotropic_prior":
            e += 0.1
        return e
    make_runs(err, pretrainings=("supervised", "simclr")).to_csv(tables / "runs.csv", index=False)
    rank_table("true").to_csv(tables / "ablation_rank.csv", index=False)
    lambda_table("false").to_csv(tables / "ablation_lambda.csv", index=False)
    make_runs(lambda p, m, n, s: base_error(n, s) + 0.02 * ((s * 3) % 4 - 1.5),
              methods=["sgd_learned_mean", "bnn_learned_mean"],
              pretrainings=("supervised", "simclr")).to_csv(tables / "ablation_learned_mean.csv", index=False)
    landscape_table("true").to_csv(tables / "landscape.csv", index=False)
    segmentation_table("undecidable").to_csv(tables / "segmentation_runs.csv", index=False)


def check_rendered_report(report: Path, png: Path, claims_csv: Path, exe: str) -> list[list[str]]:
    """The rendered report's front page holds the claims table with the verdicts of claims.csv, and the
    screenshot shows it (verdict-coloured cells drawn)."""
    shot.screenshot(report, png, exe=exe)
    rows = shot.claims_rows(shot.dump_dom(report, exe=exe))
    assert rows, "the claims table (id audit-claims) is not in the rendered report"
    header, body = rows[0], rows[1:]
    assert header[:3] == ["claim", "what the paper says", "our verdict"]
    claims = pd.read_csv(claims_csv)
    assert [r[0] for r in body] == list(claims["claim"])
    assert [r[2] for r in body] == list(claims["verdict"])  # the computed verdicts, as rendered
    stats = shot.pixel_stats(png)
    assert stats["std"] > 10 and stats["non_white"] > 0.05, f"blank screenshot? {stats}"
    for verdict in set(claims["verdict"]):
        assert stats[verdict] > 200, f"no visible '{verdict}' cell in the screenshot: {stats}"
    return rows


@pytest.mark.slow  # about 25 s: a Snakemake run, a report and two Chromium renders
def test_report_front_page_shows_the_audit_claims_table(workdir, chromium):
    write_synthetic_tables(workdir / "results" / "tables")
    target = "results/audit/claims.csv"
    # only the audit runs: the synthetic tables stand in for the rules that would make them
    snakemake("--cores", "1", "--allowed-rules", "audit", "--", target, cwd=workdir)
    snakemake("--allowed-rules", "audit", "--report", "report.html", "--", target, cwd=workdir)
    report = workdir / "report.html"
    rows = check_rendered_report(report, workdir / "report.png", workdir / target, chromium)
    verdicts = {r[0]: r[2] for r in rows[1:]}
    assert verdicts["C1"] == "supported" and verdicts["C2"] == "not supported"  # the synthetic tables' answers
    # every audit file is in the report's results (category "Reproducibility audit")
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report.read_text(), flags=re.DOTALL).group(1))
    names = {Path(k).name for k in results}
    assert {"claims.csv", "claims.md", "claims.html", "cells.csv", "cells.md", "cells.html"} <= names


