"""The audit as a reader sees it: Markdown and HTML tables, the claims and cells pages, the claims overview on
the report's front page, and the text that says how a verdict is reached. Pages lead with the verdict and its
numbers; long provenance (the runs each part used) is folded in ``<details>`` so rows stay one or two lines."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from bayes_transfer.audit.cells import cells_headline, cells_status_by_table
from bayes_transfer.audit.settings import AuditSettings
from bayes_transfer.controls.view import CONTROLS_NOTE, control_rows

# ---------------------------------------------------------------------------------------------------------------
# numbers as text


def fmt(x, digits: int = 2) -> str:
    """A cell as text: strings unchanged, NaN as '-', booleans as yes/no, integers without decimals."""
    if isinstance(x, str):
        return x
    if x is None or x != x:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}f}"


def fmt_signed(x: float, digits: int = 2) -> str:
    return "nan" if x != x else f"{(round(x, digits) or 0.0):+.{digits}f}"  # no "-0.00"


def fmt_p(p: float) -> str:
    if p != p:
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def dz_text(d_z: float, degenerate: str) -> str:
    """Cohen's d_z, or what it is when undefined (every paired difference equal: SD 0)."""
    return "undefined (SD 0)" if degenerate else "-" if d_z != d_z else f"{(round(d_z, 2) or 0.0):.2f}"


def effect_text(r: Mapping) -> str:
    """'+1.23 [+0.50, +2.00] pp': the mean paired difference with its confidence interval."""
    if r["effect"] != r["effect"]:
        return "-"
    unit = f" {r['unit']}" if r["unit"] else ""
    ci = "" if r["ci_low"] != r["ci_low"] else f" [{fmt_signed(r['ci_low'])}, {fmt_signed(r['ci_high'])}]"
    return f"{fmt_signed(r['effect'])}{ci}{unit}"


def numbers_text(r: Mapping, label: str = "part", reason: str = "reason") -> str:
    """'label: effect [CI] unit, p ..., n = ...' of a tested part (a parts row, or a claims row with
    ``label='decisive_part'``), or 'label: reason' when it has no pairs."""
    n = r["n_pairs"]
    if not (n == n and n > 0):
        return f"{r[label]}: {r[reason]}"
    text = f"{r[label]}: {effect_text(r)}, p {fmt_p(r['p_value'])}, n = {int(n)}"
    return text + (" (all paired differences equal: d_z undefined)" if r.get("degenerate") else "")


# ---------------------------------------------------------------------------------------------------------------
# tables and pages

Formats = Mapping[str, Callable[[object], str]]


def md_table(df: pd.DataFrame, formats: Formats | None = None) -> str:
    formats = formats or {}
    cols = list(df.columns)
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(esc(formats.get(c, fmt)(row[c])) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fold_summary(text: str) -> str:
    """The short label of a folded provenance cell: the names of the files it cites."""
    names = []
    for segment in text.split(" | "):
        for f in segment.split(": ")[0].split(" + "):
            names.append(PurePosixPath(f.strip()).name)
    names = list(dict.fromkeys(n for n in names if n))
    return (names[0] + (f" + {len(names) - 1} more" if len(names) > 1 else "")) if names else "details"


def html_table(df: pd.DataFrame, formats: Formats | None = None, table_id: str = "",
               verdict_cols: tuple[str, ...] = ("verdict", "our verdict", "report verdict", "status",
                                                 "Flowers-102 report", "Harvey et al. (TMLR 2024)"),
               folded: tuple[str, ...] = ("runs",), long: tuple[str, ...] = (),
               nowrap: tuple[str, ...] = ()) -> str:
    """An HTML table; verdict cells carry a class (v-supported, v-contradicted, ...) for colour, cells of
    ``folded`` columns collapse into <details> (summary: the files they cite), ``long`` columns wrap within a
    width, ``nowrap`` columns stay on one line."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.to_dict("records"):
        cells = []
        for c in df.columns:
            text = str(formats.get(c, fmt)(row[c]))
            if c in verdict_cols or str(c).startswith("ours ("):
                cells.append(f'<td class="v-{text.split(" (")[0].replace(" ", "-")}">{html.escape(text)}</td>')
            elif c in folded and text not in ("", "-"):
                cells.append(f'<td class="fold"><details><summary>{html.escape(_fold_summary(text))}</summary>'
                             f"{html.escape(text)}</details></td>")
            else:
                cls = ' class="long"' if c in long else ' class="nowrap"' if c in nowrap else ""
                cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table{ident} class="audit">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) + \
        "\n</tbody>\n</table>\n"


STYLE = """
table.audit { border-collapse: collapse; font-family: sans-serif; font-size: 12px; margin: 0.5em 0 1.5em; }
table.audit th, table.audit td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; }
table.audit th { background: #eee; }
table.audit td.long { min-width: 10em; max-width: 22em; } table.audit td.nowrap { white-space: nowrap; }
table.audit td.fold { min-width: 9em; max-width: 12em; color: #333; }
table.audit td.fold summary { cursor: pointer; color: #224; }
table.audit td.fold details[open] { min-width: 24em; }
td.v-supported { background: #d4f4d4; } td.v-contradicted { background: #f4b8b8; }
td.v-no-relevant-effect { background: #d8e4f4; } td.v-inconclusive { background: #f4ecc8; }
td.v-matched { background: #d4f4d4; } td.v-partly-supported { background: #e4f0c8; }
td.v-not-supported { background: #f8d0d0; }
"""


def html_page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE} body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}</style></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


# ---------------------------------------------------------------------------------------------------------------
# the claims

P_FORMATS = {"p_value": fmt_p, "p_wilcoxon": fmt_p, "p_holm": fmt_p}


def claims_overview(claims: pd.DataFrame, beside: pd.DataFrame | None = None) -> pd.DataFrame:
    """The headline: claim, the paper's statement, the published reproductions' verdicts and ours on this tier
    and any other (``beside``: :func:`bayes_transfer.audit.tiers.beside`), and the deciding part's numbers.
    Without ``beside``: our verdict and the reproducibility report's (its claims 1-5)."""
    rows = []
    for i, r in enumerate(claims.to_dict("records")):
        row = {"claim": r["claim"], "what the paper says": r["title"]}
        if beside is None:
            rep = r.get("report_verdict")
            row |= {"our verdict": r["verdict"],
                    "report verdict": rep if isinstance(rep, str) else "not tested"}
        else:
            row |= {c: beside[c].iloc[i] for c in beside.columns if c != "claim"}
        row["numbers behind it (deciding part)"] = numbers_text(r, "decisive_part", "decisive_reason")
        rows.append(row)
    return pd.DataFrame(rows)


#: what the overview's reproduction and other-tier columns are
REPRODUCTIONS_NOTE = ("Flowers-102 report and Harvey et al.: the published reproductions' conclusions on the same "
                      "claims (package data, bayes_transfer/audit/reference/SOURCE.md), shown beside ours, never used "
                      "to compute them; ours (another tier): that tier's own audit (config audit.tiers). ")


def tier_text(result: Mapping[str, pd.DataFrame]) -> str:
    """Which tier the verdicts come from and what it can conclude (empty when the audit was given no tier)."""
    tier = result.get("tier")
    if not tier:
        return ""
    from bayes_transfer.audit.tiers import TIER_SCOPE

    return f"These verdicts come from {TIER_SCOPE[tier]}"


def controls_overview(controls: pd.DataFrame) -> pd.DataFrame:
    """The "Pipeline controls" table: per control and claim, the verdict, the deciding part's effect, what the
    control must show and whether it does (bayes_transfer.controls.view)."""
    return pd.DataFrame([{"control": f"{r['control']} ({'passed' if r['passed'] else 'FAILED'})", "claim": r["claim"],
                          "verdict": r["verdict"], "effect (deciding part)": numbers_text(r, "decisive_part", "verdict"),
                          "expected": r["expected"], "as expected": r["as_expected"]} for r in control_rows(controls)])


def _controls_section(result: Mapping[str, pd.DataFrame], as_html: bool) -> str:
    """The "Pipeline controls" heading, table and note ('' when the config ran no controls)."""
    controls = result.get("controls")
    if controls is None:
        return ""
    view = controls_overview(controls)
    if as_html:
        return (f"<h2>Pipeline controls</h2>\n{html_table(view, table_id='audit-controls', long=('expected',))}"
                f"<p style=\"font-size:11px\">{html.escape(CONTROLS_NOTE)}</p>\n")
    return f"## Pipeline controls\n\n{md_table(view)}\n{CONTROLS_NOTE}\n\n"


def parts_view(parts: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    """The parts table for reading: verdict and numbers first, then how it was tested, provenance last
    (claim_parts.csv has every column under its own name)."""
    ci = f"effect [{1 - settings.alpha:.0%} CI]"
    rows = []
    for r in parts.to_dict("records"):
        part = r["part"] if r["in_verdict"] or "not in verdict" in r["part"] else f"{r['part']} (not in verdict)"
        pairs = f"{r['n_pairs']}" + (f" (+{r['n_dropped']} dropped)" if r["n_dropped"] else "")
        row = {"claim": r["claim"], "part": part, "verdict": r["verdict"], ci: effect_text(r), "p": fmt_p(r["p_value"]),
               "pairs": pairs, "claimed": r["claimed"], "d_z": dz_text(r["d_z"], r["degenerate"]),
               "signed-rank p": fmt_p(r["p_wilcoxon"]), "strata agreeing": r["strata_agree"]}
        if parts["mde"].notna().any():
            row["min. detectable"] = "-" if r["mde"] != r["mde"] else f"{r['mde']:.2f} {r['unit']}".strip()
        rows.append(row | {"reason": r["reason"], "contrast": r["contrast"], "runs": r["runs"]})
    return pd.DataFrame(rows)


def strata_view(strata: pd.DataFrame, settings: AuditSettings) -> pd.DataFrame:
    ci = f"effect [{1 - settings.alpha:.0%} CI]"
    return pd.DataFrame([{"claim": r["claim"], "part": r["part"], "stratum": r["stratum"], ci: effect_text(r),
                          "p": fmt_p(r["p_value"]), "p (Holm)": fmt_p(r["p_holm"]), "pairs": r["n_pairs"],
                          "d_z": dz_text(r["d_z"], r["degenerate"])} for r in strata.to_dict("records")],
                        columns=["claim", "part", "stratum", ci, "p", "p (Holm)", "pairs", "d_z"])


def method_text(settings: AuditSettings) -> str:
    deltas = ", ".join(f"{k} {v:g}" for k, v in sorted(settings.min_effect.items()))
    return (
        f"Test: two-sided paired t-test over seeds (the same seed = the same training subsample for every method), "
        f"pairs pooled over training sizes; alpha = {settings.alpha:g}. Verdict of a part: *supported* when the "
        f"mean paired difference has the claimed sign and p < alpha; *contradicted* when it has the opposite sign "
        f"with p < alpha; *no relevant effect* when p >= alpha and the whole {1 - settings.alpha:.0%} confidence "
        f"interval lies within ± the smallest relevant effect delta (in the metric's own units: {deltas}); "
        f"*inconclusive* otherwise (the reason says on which side the interval reaches beyond ±delta and whether "
        f"the test had the power to see an effect) and with fewer than 2 pairs. A claim with several parts is "
        f"supported when all its parts are; else contradicted when any part is; else no relevant effect when any "
        f"part is; else inconclusive. Effects are in percentage points (pp) for error, ECE and mean IoU and in "
        f"nats for NLL and loss; positive = the claimed direction unless the 'claimed' column says '<'. d_z = "
        f"mean / SD of the paired differences (undefined, SD 0, when all paired differences are equal). p_wilcoxon: signed-rank "
        f"test on the same pairs (robustness check; with 5 pairs it cannot go below 0.0625). Failed runs are never "
        f"averaged in: a pair with a failed run is dropped and counted (n_dropped), except in C2 where a diverged "
        f"run counts as error 1.0. The runs column names exactly the runs the pairs used. Per-size tests "
        f"(Holm-corrected) are in claim_strata.csv, every pair with its run files in claim_pairs.csv."
    )


def claims_markdown(result: Mapping[str, pd.DataFrame], settings: AuditSettings) -> str:
    lines = ["# Reproducibility audit: the paper's claims tested on our runs", "",
             *([tier_text(result), ""] if tier_text(result) else []),
             *([REPRODUCTIONS_NOTE.strip(), ""] if "beside" in result else []),
             method_text(settings), "", md_table(claims_overview(result["claims"], result.get("beside"))), "",
             _controls_section(result, as_html=False) + "## Parts of each claim", "",
             md_table(parts_view(result["parts"], settings)), "",
             "## How each claim was tested", ""]
    for r in result["claims"].to_dict("records"):
        lines.append(f"- **{r['claim']}** ({r['paper']}): {r['test']}. Runs: {r['runs'] or '-'}.")
    rep = result["claims"].dropna(subset=["report_verdict"]) if "report_verdict" in result["claims"] else []
    if len(rep):
        lines += ["", "## The reproducibility report (Flowers-102) on the same claims", ""]
        for r in rep.to_dict("records"):
            lines.append(f"- **{r['claim']}** (report claim {int(r['report_claim_no'])}): {r['report_verdict']}: "
                         f"{r['report_basis']}. Ours: {r['verdict']}.")
    return "\n".join(lines) + "\n"


def claims_html(result: Mapping[str, pd.DataFrame], settings: AuditSettings) -> str:
    long = ("numbers behind it (deciding part)", "what the paper says", "reason", "contrast", "test",
            "report_basis")
    nowrap = (f"effect [{1 - settings.alpha:.0%} CI]", "p", "signed-rank p", "p (Holm)")
    body = [f"<p>{html.escape(tier_text(result))}</p>" if tier_text(result) else "",
            html_table(claims_overview(result["claims"], result.get("beside")), table_id="audit-claims", long=long),
            f"<p>{html.escape(method_text(settings).replace('*', ''))}</p>",
            _controls_section(result, as_html=True) + "<h2>Parts of each claim</h2>",
            html_table(parts_view(result["parts"], settings), table_id="audit-parts", long=long, nowrap=nowrap),
            "<h2>Per-size tests (Holm-corrected within each part)</h2>",
            html_table(strata_view(result["strata"], settings), nowrap=nowrap),
            "<h2>How each claim was tested</h2>",
            html_table(result["claims"][["claim", "paper", "test", "report_basis", "runs"]], long=long)]
    return html_page("Reproducibility audit: claims", "\n".join(body))


FRONT_PAGE_STYLE = """
div.h-screen:has(#audit-overview) { align-items: flex-start; }
div.prose:has(#audit-overview) { max-width: 58rem; }
#audit-overview table.audit { font-size: 11px; margin: 0.3em 0; }
#audit-overview table.audit th, #audit-overview table.audit td { padding: 2px 5px; }
"""


def claims_fragment(result: Mapping[str, pd.DataFrame], settings: AuditSettings) -> str:
    """The claims overview as an HTML fragment for the Snakemake report's front page (workflow.rst includes it).
    Its style puts the report's content pane at the top and widens it while the fragment is shown, so the whole
    table is visible without scrolling (the pane is otherwise centred vertically, which hides a tall table's top)."""
    return (f"<style>{STYLE}{FRONT_PAGE_STYLE}</style>\n<div id=\"audit-overview\">\n"
            + (f"<p style=\"font-size:11px\">{html.escape(tier_text(result))}</p>" if tier_text(result) else "")
            + f"{html_table(claims_overview(result['claims'], result.get('beside')), table_id='audit-claims')}"
            f"<p style=\"font-size:11px\">Verdicts computed from our runs: two-sided paired t-test over seeds, "
            f"alpha = {settings.alpha:g}; supported = claimed sign with p &lt; alpha; contradicted = opposite sign "
            f"with p &lt; alpha; no relevant effect = the {1 - settings.alpha:.0%} CI lies within ± the smallest "
            f"relevant effect; inconclusive otherwise. A claim is supported when all its parts are, else "
            f"contradicted / no relevant effect when any part is. {REPRODUCTIONS_NOTE if 'beside' in result else ''}"
            f"Every part, pair and per-size test: category "
            f"<i>Reproducibility audit</i>.</p>\n{_controls_section(result, as_html=True)}</div>\n")


# ---------------------------------------------------------------------------------------------------------------
# the cells

CELL_VIEW = ["table", "dataset", "eval_set", "backbone", "pretraining", "method", "n_train", "metric",
             "ours_mean", "ours_se", "paper_value", "paper_se", "diff", "z", "ours_n_failed"]
CELLS_INTRO = ("Values in percent: test error (100 - accuracy; 100 - mean per-class accuracy for Flowers-102 and "
               "Pets) or mean IoU. Ours: mean ± SE over seeds, successful runs only (ours_n_failed counts the "
               "others); paper ± SE where it prints one (Tables 10-14). diff = ours - paper; z = diff / "
               "sqrt(SE_ours^2 + SE_paper^2), with our SE alone where the paper prints none. Our shifted_test on "
               "CIFAR-10 is the paper's CIFAR-10.1.")


def cells_markdown(cells: pd.DataFrame) -> str:
    matched = cells[cells["status"] == "matched"]
    lines = ["# Reproducibility audit: our numbers beside the paper's, cell by cell", "", CELLS_INTRO, "",
             f"**{cells_headline(cells)}**", ""]
    if len(matched):
        lines += ["## Matched cells", "", md_table(matched[CELL_VIEW]), ""]
    lines += ["## Paper cells by table", "", md_table(cells_status_by_table(cells)), ""]
    ours = cells[cells["status"] == "not in the paper"]
    if len(ours):
        lines += ["## Our cells without a paper counterpart", "",
                  md_table(ours[["dataset", "eval_set", "backbone", "pretraining", "method", "n_train", "metric",
                                 "ours_mean", "ours_se", "ours_n_ok", "ours_n_failed", "reason"]]), ""]
    return "\n".join(lines) + "\n"


def cells_html(cells: pd.DataFrame) -> str:
    matched = cells[cells["status"] == "matched"]
    body = [f"<p>{html.escape(CELLS_INTRO)}</p>", f"<p><b>{html.escape(cells_headline(cells))}</b></p>"]
    if len(matched):
        body += ["<h2>Matched cells</h2>", html_table(matched[CELL_VIEW], table_id="audit-cells")]
    body += ["<h2>Paper cells by table</h2>", html_table(cells_status_by_table(cells), long=("why_unmatched",))]
    body += ["<h2>Every cell</h2>", html_table(cells, long=("reason",))]
    return html_page("Reproducibility audit: per-cell comparison", "\n".join(body))
