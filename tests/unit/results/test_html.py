"""The HTML pages the report shows for tables and figures (bayes_transfer.results.html): cells as given (escaped,
NaN blank), provenance folded, caption under the table, the figure embedded, and every report caption of the
tables and figures rendering for every wildcard value the rules use."""

import base64
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from bayes_transfer.results import html

ROOT = Path(__file__).resolve().parents[3]


def cells(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.DOTALL)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, flags=re.DOTALL)]
            for r in rows]


def test_table_cells_are_the_tables_values_escaped():
    table = pd.DataFrame({"n=10": ["12.3 ± 0.4", "<b>x</b>"], "n=50": [0.123456789, np.nan]},
                         index=pd.Index(["sgd_transfer", "bnn_learned_prior"], name="method"))
    out = html.table_html(table, table_id="t")
    assert 'id="t"' in out and "&lt;b&gt;x&lt;/b&gt;" in out and "<b>" not in out
    assert cells(out) == [["method", "n=10", "n=50"], ["sgd_transfer", "12.3 ± 0.4", "0.123457"],
                          ["bnn_learned_prior", "&lt;b&gt;x&lt;/b&gt;", ""]]
    assert '<td class="num">0.123457</td>' in out


def test_provenance_and_long_cells_are_folded():
    path = "results/ablations/rank/supervised/bnn_learned_prior/k0/seed0.json"
    table = pd.DataFrame({"method": ["a"], "path": [path], "note": ["x" * 61], "short": ["y" * 60]})
    out = html.table_html(table, index=False)
    assert f"<details><summary>seed0.json</summary>{path}</details>" in out
    assert f"<details><summary>{'x' * 24}…</summary>{'x' * 61}</details>" in out
    assert f"<td>{'y' * 60}</td>" in out and "<td>a</td>" in out


def test_provenance_columns_go_last_and_failed_runs_are_shaded():
    table = pd.DataFrame({"path": ["a/seed0.json", "a/seed1.json"], "seed": [0, 1], "success": [True, False],
                          "reason": ["", "diverged"], "value": [0.5, np.nan]})
    out = html.table_html(table, index=False)
    assert cells(out)[0] == ["seed", "success", "value", "path", "reason"]
    rows = re.findall(r"<tr[^>]*>", out)
    assert rows == ["<tr>", "<tr>", '<tr class="failed">']  # the header, then the two runs
    assert '<td class="num">1</td>' in out and "<td>False</td>" in out


def test_table_page_puts_the_title_above_and_the_caption_under_the_table():
    table = pd.DataFrame({"n=10": ["1.0"]}, index=pd.Index(["m"], name="method"))
    page = html.table_page(table, title="Table 2 <digits>", caption="<p>Mean ± SE.</p>", source="t.md")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert page.index("<h1>Table 2 &lt;digits&gt;</h1>") < page.index("<table") < page.index("Mean ± SE.")
    assert "Also written to t.md." in page and html.HEADER_BACKGROUND in page


def test_figure_page_embeds_the_png_with_the_caption_and_the_numbers(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    page = html.figure_page(png, title="Fig", caption="<p>what it shows</p>",
                            data=pd.DataFrame({"n_train": [10], "mean": [0.5]}), source="f.csv")
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(encoded) == png.read_bytes()
    assert page.index("</figure>") > page.index('<figcaption class="caption"><p>what it shows</p>')
    assert "<details><summary>The plotted numbers (f.csv)</summary>" in page
    assert cells(page) == [["n_train", "mean"], ["10", "0.5"]]


def test_render_caption_is_jinja_then_restructuredtext():
    sm = SimpleNamespace(wildcards=SimpleNamespace(pretraining="simclr"), config={"data": {"dataset": "digits"}})
    out = html.render_caption('*Tables* for the {{ snakemake.wildcards.pretraining }} prior on '
                              '``{{ snakemake.config["data"]["dataset"] }}``.', sm)
    assert out.strip() == ('<p><em>Tables</em> for the simclr prior on '
                           '<span class="docutils literal">digits</span>.</p>')


#: wildcard values each caption is rendered with by the rules (workflow/rules/*.smk)
WILDCARDS = {
    "size_figure": [{"figure": f, "pretraining": "supervised"} for f in ("fig4", "fig5a", "fig5b")],
    "ablation_table": [{"ablation": a} for a in ("rank", "lambda", "learned_mean")],
}


@pytest.mark.parametrize("rst", sorted(p.stem for p in (ROOT / "workflow" / "report").glob("*.rst")
                                       if not p.stem.startswith("audit_") and p.stem != "workflow"))
def test_every_table_and_figure_caption_renders(rst):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    text = (ROOT / "workflow" / "report" / f"{rst}.rst").read_text()
    for wildcards in WILDCARDS.get(rst, [{"pretraining": "supervised"}]):
        out = html.render_caption(text, SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config=config))
        assert out.startswith("<p>") and len(out) > 100 and "{{" not in out and "system-message" not in out, rst
