"""Our runs beside the paper's published numbers, cell by cell (the claims' verdicts are in
:mod:`bayes_transfer.audit.claims`, the pages in :mod:`bayes_transfer.audit.render`).

A paper cell (table, dataset, eval set, backbone, pre-training, method, training size,
metric) matches our runs when every one of those is the same: our ``arch`` is the paper's backbone, our
``error`` (1 - accuracy; 1 - mean per-class accuracy for Flowers-102 and Pets) times 100 is its test error, our
``shifted_test`` on CIFAR-10 is its CIFAR-10.1, segmentation mean IoU is compared on the validation set at the
full training set. Where nothing matches (the embedded default runs digits on a small ResNet, which is in no
paper table) every paper cell is still listed, with the reason it has no counterpart; nothing is matched by
approximation. ``z = (ours - paper) / sqrt(se_ours^2 + se_paper^2)``; the paper prints standard errors only in
Tables 10-14, elsewhere z uses our standard error alone (``z_basis`` says which).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayes_transfer.audit.extract import TABLE_FILES, run_values

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
            values, k = run_values(runs, "error", keys + ["seed"], source=TABLE_FILES["runs"],
                                   eval_set=eval_set)
            s = _summary(values, [c for c in k if c != "seed"])
            s["eval_set"] = np.where(s["dataset"] == "cifar10", "cifar10.1", "shifted_test") \
                if eval_set == "shifted_test" else "test"
            s["metric"], s["task"] = "test_error", "classification"
            frames.append(s)
    if segmentation is not None and len(segmentation):
        values, k = run_values(segmentation, "miou", keys + ["seed"], source=TABLE_FILES["segmentation"],
                               eval_set=None)
        s = _summary(values, [c for c in k if c not in ("seed", "n_train")])
        s["eval_set"], s["metric"], s["task"], s["n_train"] = "val", "miou", "segmentation", "full"
        frames.append(s)
    if not frames:
        return pd.DataFrame(columns=["task", *CELL_KEYS, "ours_mean", "ours_se", "ours_n_ok", "ours_n_failed"]).astype(
            {"n_train": str, "ours_mean": float, "ours_se": float, "ours_n_ok": int, "ours_n_failed": int})
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


def cells_status_by_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per paper table and setting: how many cells matched, and why the others did not."""
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
    """One paragraph: how many paper cells matched, and why none did when none did."""
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
