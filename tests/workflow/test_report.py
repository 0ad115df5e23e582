"""The Snakemake HTML report shows the audit: built from a copy of the workflow, opened in headless Chromium,
screenshotted, and checked through the rendered DOM (the claims table and its computed verdicts) and the pixels
(the verdict cells' colours are drawn). Skipped, with the reason, where Chromium is missing and cannot be
installed (set BAYES_TRANSFER_NO_INSTALL=1 to never try `apt-get install chromium`).

It feeds synthetic tidy tables (tests/unit/audit/test_audit.py's builders) to the audit rule alone; the end-to-end smoke
test in tests/workflow/test_workflow.py builds the report of a real run and checks that every figure is in it.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "audit"))  # the synthetic tables of test_audit.py
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
    # the published reproductions' verdicts, then ours on this tier (the embedded default)
    assert header[:5] == ["claim", "what the paper says", "Flowers-102 report", "Harvey et al. (TMLR 2024)",
                          "ours (default)"]
    claims = pd.read_csv(claims_csv)
    assert [r[0] for r in body] == list(claims["claim"])
    rendered = [r[4] for r in body]
    # the computed verdicts, as rendered ("not run": inconclusive because no part found runs)
    assert [v if v != "not run" else "inconclusive" for v in rendered] == list(claims["verdict"])
    stats = shot.pixel_stats(png)
    assert stats["std"] > 10 and stats["non_white"] > 0.05, f"blank screenshot? {stats}"
    for verdict in set(rendered) - {"not run"}:
        assert stats[verdict] > 200, f"no visible '{verdict}' cell in the screenshot: {stats}"
    return rows


@pytest.mark.slow  # about 25 s: a Snakemake run, a report and two Chromium renders
def test_report_front_page_shows_the_audit_claims_table(workdir, chromium):
    write_synthetic_tables(workdir / "results" / "tables")
    target = "results/audit/claims.csv"
    # only the audit runs: the synthetic tables stand in for the rules that would make them
    # (and no controls rule: the controls' own test runs it, tests/workflow/test_controls_workflow.py)
    no_controls = ("--config", "controls={enabled: false}")
    snakemake("--cores", "1", "--allowed-rules", "audit", *no_controls, "--", target, cwd=workdir)
    snakemake("--allowed-rules", "audit", "--report", "report.html", *no_controls, "--", target, cwd=workdir)
    report = workdir / "report.html"
    rows = check_rendered_report(report, workdir / "report.png", workdir / target, chromium)
    verdicts = {r[0]: r[4] for r in rows[1:]}
    assert verdicts["C1"] == "supported" and verdicts["C2"] == "no relevant effect"  # the synthetic tables' answers
    # every audit file is in the report's results (category "Reproducibility audit")
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report.read_text(), flags=re.DOTALL).group(1))
    names = {Path(k).name for k in results}
    assert {"claims.csv", "claims.md", "claims.html", "cells.csv", "cells.md", "cells.html"} <= names


# --- paper tables and figures: shown inline on their result pages, captioned (issue 17, items 1 and 3) ---

#: the pages the table and figure rules write for the report, and those rules (all run from synthetic tables)
PAPER_TABLE = "results/tables/table_supervised.html"
PAGE_TARGETS = [PAPER_TABLE, "results/tables/table14_shifted_supervised.html", "results/tables/ece_supervised.html",
                "results/figures/fig4_supervised.html", "results/figures/fig3a_landscape.html",
                "results/figures/fig3b_rank.html", "results/figures/fig3d_lambda.html",
                "results/figures/fig3c_learned_mean.html"]
PAGE_RULES = ["tables", "table_ece", "figure_vs_size", "figure_landscape", "figure_rank", "figure_lambda",
              "figure_learned_mean"]
#: screenshots a person can open after the test (the repository's results/, which git ignores)
SCREENSHOTS = ROOT / "results" / "screenshots"


def open_result(report: Path, result: str, dest: Path) -> Path:
    """A copy of ``report`` that, once loaded, shows ``result`` in the content area exactly as the result's
    eye button does (``app.setView`` with the result's data URI; the report has no URL per result)."""
    script = ("<script>window.addEventListener('load', function () { setTimeout(function () {"
              f" var path = {json.dumps(result)};"
              " app.setView({content: 'html', contentPath: results[path].data_uri, resultPath: path}); }, 300); });"
              "</script>\n")
    head, tail = report.read_text().rsplit("</body>", 1)  # the last one: the bundled libraries contain the string
    dest.write_text(head + script + "</body>" + tail)
    return dest


def shown_page(dom: str) -> str:
    """The HTML page that the rendered report shows in its content iframe (decoded from the iframe's data URI)."""
    import base64

    m = re.search(r'<iframe[^>]*src="data:text/html;[^"]*base64,([^"]+)"', dom)
    assert m, "no HTML result is shown in the report's content area"
    return base64.b64decode(m.group(1)).decode("utf-8")


def table_cells(dom: str, table_id: str = "results-table") -> list[list[str]]:
    import html as htmllib

    m = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', dom, flags=re.DOTALL)
    assert m, f"no table {table_id!r} in the rendered page"
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), flags=re.DOTALL)
    cell = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", flags=re.DOTALL)
    return [[htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cell.findall(r)] for r in rows]


def markdown_cells(md: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set("".join(r)) <= set("-: ")]


def colour_pixels(png: Path, colour: str, x_from: int = 0) -> int:
    """Pixels of exactly ``colour`` (#rrggbb, within 2 per channel) right of column ``x_from``."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(str(png))
    rgb = np.round(img[..., :3] * 255).astype(int)[:, x_from:]
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=2) <= 2).sum())


@pytest.mark.slow  # about 70 s: seven figure/table jobs, a report and four Chromium renders
def test_report_shows_paper_tables_and_figures_inline_with_their_captions(workdir, chromium):
    import shutil

    from bayes_transfer.results.aggregate import summarise
    from bayes_transfer.results.html import HEADER_BACKGROUND
    from bayes_transfer.results.plots import METHOD_COLORS

    tables = workdir / "results" / "tables"
    write_synthetic_tables(tables)
    summarise(pd.read_csv(tables / "runs.csv")).to_csv(tables / "summary.csv", index=False)
    # only the table and figure rules run: the synthetic tables stand in for the runs
    snakemake("--cores", "1", "--allowed-rules", *PAGE_RULES, "--", *PAGE_TARGETS, cwd=workdir)
    snakemake("--allowed-rules", *PAGE_RULES, "--report", "report.html", "--", *PAGE_TARGETS, cwd=workdir)
    report = workdir / "report.html"
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report.read_text(), flags=re.DOTALL).group(1))
    # every table and figure is in the report as an HTML page (shown inline), none as Markdown or CSV
    assert set(PAGE_TARGETS) <= set(results)
    assert {results[t]["mime_type"] for t in PAGE_TARGETS} == {"text/html"}
    assert not [k for k in results if k.endswith((".md", ".csv", ".tex"))]

    # the paper table, opened as a reader opens it: its cells are the Markdown table's, its caption under it
    view = open_result(report, PAPER_TABLE, workdir / "report_table.html")
    page = shown_page(shot.dump_dom(view, exe=chromium))
    (workdir / "shown_table.html").write_text(page)
    rendered = shot.dump_dom(workdir / "shown_table.html", exe=chromium)
    md = (tables / "table_supervised.md").read_text()
    assert table_cells(rendered) == markdown_cells(md)
    assert table_cells(rendered)[1][0] == "sgd_transfer" and "±" in table_cells(rendered)[1][1]
    caption = rendered.index('class="caption"')
    assert caption > rendered.index("</table>") and "Tables 2-5 / 10-13 layout" in rendered[caption:]
    # ... and the screenshot shows it drawn in the content area (header cells right of the 300 px navigation)
    png = shot.screenshot(view, workdir / "results" / "screenshots" / "report_paper_table.png", exe=chromium,
                          width=1280, height=900)
    stats = shot.pixel_stats(png)
    assert stats["std"] > 10 and stats["non_white"] > 0.05, f"blank screenshot? {stats}"
    assert colour_pixels(png, HEADER_BACKGROUND, x_from=300) > 2000, "the table's header row is not drawn"

    # a figure page: the figure drawn inline (its method colours in the pixels) with its caption under it
    view = open_result(report, "results/figures/fig4_supervised.html", workdir / "report_fig4.html")
    page = shown_page(shot.dump_dom(view, exe=chromium))
    assert page.index("<img") < page.index("Fig. 4 analogue: test error (%)") < page.index("</figure>")
    fig_png = shot.screenshot(view, workdir / "results" / "screenshots" / "report_fig4.png", exe=chromium,
                              width=1280, height=900)
    assert colour_pixels(fig_png, METHOD_COLORS["bnn_isotropic_prior"], x_from=300) > 200
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for shot_png in (png, fig_png):
        shutil.copy(shot_png, SCREENSHOTS / shot_png.name)
