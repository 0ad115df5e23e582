"""Reproducibility audit: our runs beside the paper's published numbers, cell by cell, and the paper's claims
with verdicts computed from our runs (the statistics live in :mod:`bayes_transfer.audit.claims`).

Per-cell comparison. A paper cell (table, dataset, eval set, backbone, pre-training, method, training size,
metric) matches our runs when every one of those is the same: our ``arch`` is the paper's backbone, our
``error`` (1 - accuracy; 1 - mean per-class accuracy for Flowers-102 and Pets) times 100 is its test error, our
``shifted_test`` on CIFAR-10 is its CIFAR-10.1, segmentation mean IoU is compared on the validation set at the
full training set. Where nothing matches (the embedded default runs digits on a small ResNet, which is in no
paper table) every paper cell is still listed, with the reason it has no counterpart; nothing is matched by
approximation. ``z = (ours - paper) / sqrt(se_ours^2 + se_paper^2)``; the paper prints standard errors only in
Tables 10-14, elsewhere z uses our standard error alone (``z_basis`` says which).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_transfer.audit.claims import AuditSettings, evaluate_claims, fmt_p, fmt_signed, run_values

CELL_KEYS = ["dataset", "eval_set", "backbone", "pretraining", "method", "n_train", "metric"]
CELL_COLUMNS = ["table", "task", *CELL_KEYS, "paper_value", "paper_se", "ours_mean", "ours_se", "ours_n_ok",
                "ours_n_failed", "diff", "z", "z_basis", "status", "reason"]


def _summary(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = values.groupby(keys, dropna=False)
    out = g.agg(ours_mean=("value", "mean"), sd=("value", "std"), ours_n_ok=("success", "sum"),
                n_runs=("success", "size")).reset_index()
    out["ours_n_ok"] = out["ours_n_ok"].astype(int)
    out["ours_n_failed"] = out["n_runs"] - out["ours_n_ok"]
    out["ours_se"] = out["sd"] / np.sqrt(out["ours_n_ok"])
    out.loc[out["ours_n_ok"] < 2, "ours_se"] = np.nan
    return out.drop(columns=["sd", "n_runs"])


def our_cells(runs: pd.DataFrame | None, segmentation: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our settings in the paper's terms: one row per cell with mean and SE in percent over seeds
    (successful runs only) and the number of failed runs."""
    frames = []
    keys = ["dataset", "arch", "pretraining", "method", "n_train"]
    if runs is not None and len(runs):
        present = set(runs["eval_set"].dropna()) if "eval_set" in runs.columns else {"test"}
        for eval_set in sorted(present & {"test", "shifted_test"}):
            values, k = run_values(runs, "error", keys + ["seed"], source="results/tables/runs.csv",
                                   eval_set=eval_set)
            s = _summary(values, [c for c in k if c != "seed"])
            s["eval_set"] = np.where(s["dataset"] == "cifar10", "cifar10.1", "shifted_test") \
                if eval_set == "shifted_test" else "test"
            s["metric"], s["task"] = "test_error", "classification"
            frames.append(s)
    if segmentation is not None and len(segmentation):
        values, k = run_values(segmentation, "miou", keys + ["seed"], source="results/tables/segmentation_runs.csv",
                               eval_set=None)
        s = _summary(values, [c for c in k if c not in ("seed", "n_train")])
        s["eval_set"], s["metric"], s["task"], s["n_train"] = "val", "miou", "segmentation", "full"
        frames.append(s)
    if not frames:
        return pd.DataFrame(columns=["task", *CELL_KEYS, "ours_mean", "ours_se", "ours_n_ok", "ours_n_failed"])
    out = pd.concat(frames, ignore_index=True).rename(columns={"arch": "backbone"})
    out["n_train"] = out["n_train"].map(lambda n: n if isinstance(n, str) else str(int(n)))
    for c in ("ours_mean", "ours_se"):
        out[c] = out[c] * 100.0
    return out[["task", *CELL_KEYS, "ours_mean", "ours_se", "ours_n_ok", "ours_n_failed"]]


def _why_unmatched(row: Mapping, ours: pd.DataFrame) -> tuple[str, str]:
    task = ours[ours["task"] == row["task"]]
    if task.empty:
        what = "segmentation" if row["task"] == "segmentation" else "classification"
        return "not run at this scale", f"no {what} runs in this config"
    datasets = sorted(task["dataset"].unique())
    if row["dataset"] not in datasets:
        return "not run at this scale", f"dataset {row['dataset']} not run (ours: {', '.join(datasets)})"
    d = task[task["dataset"] == row["dataset"]]
    if row["backbone"] not in set(d["backbone"]):
        return "not run at this scale", (f"backbone {row['backbone']} not run on {row['dataset']} "
                                         f"(ours: {', '.join(sorted(d['backbone'].unique()))})")
    d = d[d["backbone"] == row["backbone"]]
    missing = [f"{c} {row[c]}" for c in ("eval_set", "pretraining", "method", "n_train") if row[c] not in set(d[c])]
    return "not run in this config", "no runs with " + (", ".join(missing) if missing else "this combination")


def compare_cells(published: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Every paper cell with our matching cell where there is one, then our cells the paper has no cell for."""
    pub = published.rename(columns={"value": "paper_value", "se": "paper_se"}).copy()
    pub["n_train"] = pub["n_train"].astype(str)
    merged = pub.merge(ours.drop(columns=["task"]), on=CELL_KEYS, how="left", indicator=True)
    status, reason = [], []
    for row in merged.to_dict("records"):
        if row["_merge"] == "both":
            if row["ours_n_ok"] == 0:
                status.append("all runs failed")
                reason.append(f"{int(row['ours_n_failed'])} runs, none succeeded")
            else:
                status.append("matched")
                reason.append("")
        else:
            s, r = _why_unmatched(row, ours)
            status.append(s)
            reason.append(r)
    merged["status"], merged["reason"] = status, reason
    merged = merged.drop(columns=["_merge"])
    extra = ours.merge(pub[CELL_KEYS].drop_duplicates(), on=CELL_KEYS, how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns=["_merge"]).copy()
    pub_datasets = set(pub["dataset"])
    extra["status"] = "not in the paper"
    extra["reason"] = [f"the paper has no {r['dataset']} cells" if r["dataset"] not in pub_datasets
                       else "the paper has no cell for this setting" for r in extra.to_dict("records")]
    out = pd.concat([merged, extra], ignore_index=True)
    out["diff"] = out["ours_mean"] - out["paper_value"]
    both = out["ours_se"].notna() & out["paper_se"].notna()
    ours_only = out["ours_se"].notna() & out["paper_se"].isna()
    denom = np.where(both, np.sqrt(out["ours_se"] ** 2 + out["paper_se"] ** 2),
                     np.where(ours_only, out["ours_se"], np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["z"] = np.where(out["status"] == "matched", out["diff"] / denom, np.nan)
    out["z_basis"] = np.where(out["status"] != "matched", "",
                              np.where(both, "ours and paper SE", np.where(ours_only, "our SE only (paper prints none)",
                                                                         "no SE")))
    return out[CELL_COLUMNS]


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _fmt(x, digits: int = 2) -> str:
    if isinstance(x, str):
        return x
    if x is None or x != x:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}f}"


def md_table(df: pd.DataFrame, formats: Mapping[str, callable] | None = None) -> str:
    formats = formats or {}
    cols = list(df.columns)
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(esc(formats.get(c, _fmt)(row[c])) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def html_table(df: pd.DataFrame, formats: Mapping[str, callable] | None = None, table_id: str = "",
               verdict_cols: tuple[str, ...] = ("verdict", "our verdict", "report verdict", "status")) -> str:
    """An HTML table; verdict cells carry a class (supported / not-supported / inconclusive) for colour."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.to_dict("records"):
        cells = []
        for c in df.columns:
            text = formats.get(c, _fmt)(row[c])
            cls = f' class="v-{str(text).split(" (")[0].replace(" ", "-")}"' if c in verdict_cols else ""
            cells.append(f"<td{cls}>{html.escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table{ident} class="audit">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) + \
        "\n</tbody>\n</table>\n"


STYLE = """
table.audit { border-collapse: collapse; font-family: sans-serif; font-size: 12px; margin: 0.5em 0 1.5em; }
table.audit th, table.audit td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; }
table.audit th { background: #eee; }
td.v-supported { background: #d4f4d4; } td.v-not-supported { background: #f8d0d0; }
td.v-inconclusive { background: #f4ecc8; } td.v-matched { background: #d4f4d4; }
td.v-partly-supported { background: #e4f0c8; }
"""


def html_page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE} body {{ font-family: sans-serif; margin: 1.5em; }}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def claims_overview(claims: pd.DataFrame) -> pd.DataFrame:
    """The headline: claim, our verdict, the deciding part's numbers, the reproducibility report's verdict."""
    rows = []
    for r in claims.to_dict("records"):
        if r["n_pairs"] == r["n_pairs"] and r["n_pairs"] > 0:
            unit = f" {r['unit']}" if r["unit"] else ""
            ci = "" if r["ci_low"] != r["ci_low"] else f" [{fmt_signed(r['ci_low'])}, {fmt_signed(r['ci_high'])}]"
            numbers = (f"{r['decisive_part']}: {fmt_signed(r['effect'])}{ci}{unit}, p {fmt_p(r['p_value'])}, "
                       f"n = {int(r['n_pairs'])}")
        else:
            numbers = f"{r['decisive_part']}: {r['decisive_reason']}"
        rep = r.get("report_verdict")
        rows.append({"claim": r["claim"], "what the paper says": r["title"], "our verdict": r["verdict"],
                     "numbers behind it (deciding part)": numbers,
                     "report verdict": rep if isinstance(rep, str) else "not tested"})
    return pd.DataFrame(rows)


PART_VIEW = ["claim", "part", "contrast", "claimed", "effect", "unit", "ci_low", "ci_high", "d_z", "p_value",
             "p_wilcoxon", "n_pairs", "n_dropped", "strata_agree", "verdict", "in_verdict", "reason", "runs"]
P_FORMATS = {"p_value": fmt_p, "p_wilcoxon": fmt_p, "p_holm": fmt_p}


def method_text(settings: AuditSettings) -> str:
    deltas = ", ".join(f"{k} {v:g}" for k, v in sorted(settings.min_effect.items()))
    return (
        f"Test: two-sided paired t-test over seeds (the same seed = the same training subsample for every method), "
        f"pairs pooled over training sizes; alpha = {settings.alpha:g}. A part is *supported* when the mean paired "
        f"difference has the claimed sign and p < alpha; *not supported* when it has the opposite sign with "
        f"p < alpha, or when the {1 - settings.alpha:.0%} confidence interval excludes the smallest relevant effect "
        f"delta in the claimed direction (delta, in the metric's own units: {deltas}); *inconclusive* otherwise "
        f"or with fewer than 2 pairs. A claim is supported when all its parts are, not supported when any part is "
        f"not. Effects are in percentage points (pp) for error, ECE and mean IoU and in nats for NLL and loss; "
        f"positive = the claimed direction unless the 'claimed' column says '<'. d_z = mean / SD of the paired "
        f"differences. p_wilcoxon: signed-rank test on the same pairs (robustness check; with 5 pairs it cannot "
        f"go below 0.0625). Failed runs are never averaged in: a pair with a failed run is dropped and counted "
        f"(n_dropped), except in C2 where a diverged run counts as error 1.0. Per-size tests (Holm-corrected) are in "
        f"claim_strata.csv, every pair with its run files in claim_pairs.csv."
    )


def claims_markdown(result: Mapping[str, pd.DataFrame], settings: AuditSettings) -> str:
    overview = claims_overview(result["claims"])
    lines = ["# Reproducibility audit: the paper's claims tested on our runs", "",
             method_text(settings), "", md_table(overview), "",
             "## Parts of each claim", "",
             md_table(result["parts"][PART_VIEW], P_FORMATS), "",
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
    body = [f"<p>{html.escape(method_text(settings).replace('*', ''))}</p>",
            html_table(claims_overview(result["claims"]), table_id="audit-claims"),
            "<h2>Parts of each claim</h2>", html_table(result["parts"][PART_VIEW], P_FORMATS),
            "<h2>Per-size tests (Holm-corrected within each part)</h2>",
            html_table(result["strata"], P_FORMATS),
            "<h2>How each claim was tested</h2>",
            html_table(result["claims"][["claim", "paper", "test", "runs", "report_basis"]])]
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
            f"{html_table(claims_overview(result['claims']), table_id='audit-claims')}"
            f"<p style=\"font-size:11px\">Verdicts computed from our runs: two-sided paired t-test over seeds, "
            f"alpha = {settings.alpha:g}; supported = claimed sign with p &lt; alpha; not supported = opposite sign "
            f"with p &lt; alpha or a CI that excludes the smallest relevant effect; inconclusive otherwise. "
            f"Every part, pair and per-size test: category <i>Reproducibility audit</i>.</p>\n</div>\n")


CELL_VIEW = ["table", "dataset", "eval_set", "backbone", "pretraining", "method", "n_train", "metric",
             "ours_mean", "ours_se", "paper_value", "paper_se", "diff", "z", "ours_n_failed"]


def cells_status_by_table(cells: pd.DataFrame) -> pd.DataFrame:
    paper = cells[cells["table"].notna()].copy()
    paper["table"] = paper["table"].astype(int)
    rows = []
    for keys, g in paper.groupby(["table", "task", "dataset", "eval_set", "backbone", "pretraining"], sort=True):
        matched = int((g["status"] == "matched").sum())
        others = g[g["status"] != "matched"]
        why = "; ".join(f"{s}: {r}" for (s, r), _ in others.groupby(["status", "reason"], sort=False))
        rows.append(dict(zip(["table", "task", "dataset", "eval_set", "backbone", "pretraining"], keys),
                         cells=len(g), matched=matched, why_unmatched=why or "-"))
    return pd.DataFrame(rows)


def cells_headline(cells: pd.DataFrame) -> str:
    paper = cells[cells["table"].notna()]
    matched = paper[paper["status"] == "matched"]
    ours = cells[cells["status"] == "not in the paper"]
    text = f"{len(matched)} of {len(paper)} paper cells matched a setting we ran."
    if len(matched) == 0:
        reasons = sorted(set(paper["reason"]))
        text += (" No paper cell matched, so there is nothing to compare number by number: "
                 + "; ".join(reasons[:4]) + ("; ..." if len(reasons) > 4 else "") +
                 ". Every paper cell is listed below and in cells.csv with that status; nothing is matched by "
                 "approximation.")
    if len(ours):
        text += f" {len(ours)} of our cells have no paper counterpart (status 'not in the paper')."
    return text


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
    body += ["<h2>Paper cells by table</h2>", html_table(cells_status_by_table(cells))]
    body += ["<h2>Every cell</h2>", html_table(cells)]
    return html_page("Reproducibility audit: per-cell comparison", "\n".join(body))


# ---------------------------------------------------------------------------------------------------------------
# the whole audit

OUTPUTS = ("cells_csv", "cells_md", "cells_html", "claims_csv", "claims_md", "claims_html", "overview_html",
           "parts_csv", "pairs_csv", "strata_csv")


def run_audit(tables: Mapping[str, pd.DataFrame | None], settings: AuditSettings | None = None,
              published: pd.DataFrame | None = None, report: pd.DataFrame | None = None) -> dict:
    """The per-cell table and the claims over the given tidy tables (keys as in claims.TABLE_FILES;
    None = not produced by this config). ``published``/``report`` default to the package's reference data."""
    from bayes_transfer.audit import reference

    settings = settings or AuditSettings()
    published = reference.published_results() if published is None else published
    report = reference.report_verdicts() if report is None else report
    cells = compare_cells(published, our_cells(tables.get("runs"), tables.get("segmentation")))
    result = evaluate_claims(tables, settings, report)
    return {"cells": cells, **result}


def write_audit(result: Mapping[str, pd.DataFrame], outputs: Mapping[str, str | Path],
                settings: AuditSettings | None = None) -> None:
    """Write the audit's files; ``outputs`` maps names in :data:`OUTPUTS` to paths (missing names are skipped)."""
    settings = settings or AuditSettings()
    writers = {
        "cells_csv": lambda p: result["cells"].to_csv(p, index=False),
        "cells_md": lambda p: Path(p).write_text(cells_markdown(result["cells"])),
        "cells_html": lambda p: Path(p).write_text(cells_html(result["cells"])),
        "claims_csv": lambda p: result["claims"].to_csv(p, index=False),
        "claims_md": lambda p: Path(p).write_text(claims_markdown(result, settings)),
        "claims_html": lambda p: Path(p).write_text(claims_html(result, settings)),
        "overview_html": lambda p: Path(p).write_text(claims_fragment(result, settings)),
        "parts_csv": lambda p: result["parts"].to_csv(p, index=False),
        "pairs_csv": lambda p: result["pairs"].to_csv(p, index=False),
        "strata_csv": lambda p: result["strata"].to_csv(p, index=False),
    }
    unknown = set(outputs) - set(writers)
    if unknown:
        raise ValueError(f"unknown audit outputs {sorted(unknown)}; expected some of {list(writers)}")
    for name, path in outputs.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        writers[name](path)


def read_tables(paths: Mapping[str, str | Path | None]) -> dict[str, pd.DataFrame | None]:
    """Read the tidy tables the workflow produced; a name mapped to None (or absent) stays None."""
    out = {}
    for name, path in paths.items():
        if path is None:
            out[name] = None
            continue
        try:
            out[name] = pd.read_csv(path)
        except (OSError, pd.errors.ParserError) as err:
            raise ValueError(f"{path}: not a readable table ({err})") from err
        except pd.errors.EmptyDataError:
            out[name] = pd.DataFrame()
    seg = out.get("segmentation")
    if seg is not None and "backbone" in seg.columns:
        # the paper's backbone column (resnet50 / resnet101) identifies a segmentation setting; the network
        # that filled it (``arch``, e.g. a small stand-in in the embedded default) may be the same for both
        out["segmentation"] = seg.drop(columns=["arch"], errors="ignore").rename(columns={"backbone": "arch"})
    return out
