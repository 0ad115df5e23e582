"""Per-run result files -> one tidy table -> summaries (mean +/- standard error over seeds) and tables.

The tidy table has one row per run x evaluation set x metric; failed runs keep one row with
``success = False`` and their reason, and are never averaged in (the summaries count them separately).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from bayes_transfer.integrity import check_consistent_inputs

RUN_KEYS = ["dataset", "arch", "pretraining", "method", "n_train", "seed"]
#: the per-run metrics of runs.csv; the OOD sets have the OOD-detection ones (bayes_transfer.results.ood)
SCALAR_METRICS = ["accuracy", "error", "nll", "ece", "brier", "mean_per_class_accuracy", "auroc_entropy",
                  "ap_entropy", "auroc_mi", "ap_mi"]


def read_result(path: str | Path, keys: Iterable[str], kind: str = "run") -> dict:
    """A per-run result file, which must hold ``keys``; otherwise ``ValueError`` naming the file."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable {kind} result ({err})") from err
    missing = [k for k in keys if k not in rec]
    if missing:
        raise ValueError(f"{path}: {kind} result lacks keys {missing}")
    return rec


def tidy_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run x evaluation set x metric. Runs of one (dataset, arch, pretraining) whose records name
    different checkpoint or prior checksums are refused (:func:`bayes_transfer.integrity.check_consistent_inputs`)."""
    rows, records = [], []
    for path in paths:
        rec = read_result(path, RUN_KEYS + ["success"])
        records.append((path, rec))
        base = {k: rec[k] for k in RUN_KEYS} | {
            "success": bool(rec["success"]), "reason": rec.get("reason", ""),
            "wall_time_s": rec.get("wall_time_s"), "code_version": rec.get("code_version"),
            "prior_rank": (rec.get("hyper") or {}).get("prior_rank"),
            "prior_scale": (rec.get("hyper") or {}).get("prior_scale"),
            "truncation": (rec.get("hyper") or {}).get("prior_truncation"),
            "prior_convention": (rec.get("hyper") or {}).get("prior_convention"),
            # -log p(theta) / N of the backbone prior at the end (None without one): ~ its log-normaliser when
            # the prior does not bind
            "prior_energy_per_datum": (rec.get("diagnostics") or {}).get("prior_energy_per_datum"),
            "path": str(path),
        }
        if not rec["success"]:
            rows.append(base | {"eval_set": None, "metric": None, "value": np.nan})
            continue
        for eval_set, values in rec["metrics"].items():
            for metric in SCALAR_METRICS:
                if metric in values:
                    rows.append(base | {"eval_set": eval_set, "metric": metric, "value": float(values[metric])})
    check_consistent_inputs(records, key=("dataset", "arch", "pretraining"))
    return pd.DataFrame(rows)


def summarise(tidy: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Mean, standard error (sd / sqrt(n)) and counts over seeds of successful runs, per cell.

    ``n_failed`` counts the failed runs of the cell's setting; a setting whose runs all failed gets
    rows with ``mean = NaN`` for every (eval_set, metric) seen elsewhere, so tables can say "failed".
    """
    by = by or ["dataset", "arch", "pretraining", "method", "n_train", "eval_set", "metric"]
    key = [c for c in by if c not in ("eval_set", "metric")]
    ok = tidy[tidy["success"]]
    out = ok.groupby(by, dropna=False)["value"].agg(mean="mean", sd="std", n_ok="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n_ok"])
    out.loc[out["n_ok"] < 2, "se"] = np.nan
    failed = tidy[~tidy["success"]].groupby(key, dropna=False).size().rename("n_failed").reset_index()
    if len(failed):
        measured = out[["eval_set", "metric"]].drop_duplicates()
        all_failed = failed.merge(out[key].drop_duplicates(), on=key, how="left", indicator=True)
        all_failed = all_failed[all_failed["_merge"] == "left_only"][key]
        if len(all_failed) and len(measured):
            extra = all_failed.merge(measured, how="cross").assign(mean=np.nan, sd=np.nan, n_ok=0, se=np.nan)
            out = pd.concat([out, extra], ignore_index=True)
        out = out.merge(failed, on=key, how="left")
    else:
        out["n_failed"] = 0
    out["n_failed"] = out["n_failed"].fillna(0).astype(int)
    return out


def _cell(mean: float, se: float, scale: float = 100.0, digits: int = 1, failed: int = 0) -> str:
    if mean != mean:
        return "failed" if failed else "-"
    s = f"{mean * scale:.{digits}f}"
    if se == se:
        s += f" ± {se * scale:.{digits}f}"
    if failed:
        s += f" ({failed} failed)"
    return s


def method_by_size_table(summary: pd.DataFrame, metric: str = "error", eval_set: str = "test",
                         methods: list[str] | None = None) -> pd.DataFrame:
    """The layout of the paper's Tables 2-13: methods as rows, training sizes as columns, mean ± SE (%)."""
    s = summary[(summary["metric"] == metric) & (summary["eval_set"] == eval_set)]
    methods = methods or sorted(s["method"].unique())
    sizes = sorted(s["n_train"].unique())
    table = pd.DataFrame(index=methods, columns=[str(n) for n in sizes], dtype=object)
    for _, r in s.iterrows():
        if r["method"] in table.index:
            table.loc[r["method"], str(r["n_train"])] = _cell(r["mean"], r["se"], failed=r["n_failed"])
    table.index.name = "method"
    return table.fillna("-")


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    cols = [table.index.name or ""] + list(table.columns)
    lines = [f"**{caption}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    cols = list(table.columns)
    esc = lambda s: str(s).replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
             " & ".join([esc(table.index.name or "")] + [esc(c) for c in cols]) + r" \\", r"\midrule"]
    for idx, row in table.iterrows():
        lines.append(" & ".join([esc(idx)] + [esc(v) for v in row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"



def accuracy_metric(dataset: str) -> str:
    """The accuracy the paper reports for ``dataset``: mean per-class for Flowers and Pets, top-1 otherwise."""
    return "mean_per_class_accuracy" if dataset in ("flowers102", "oxford_pets") else "accuracy"


def ablation_summary(tidy: pd.DataFrame, x: str, eval_set: str = "test", by: list[str] | None = None
                     ) -> pd.DataFrame:
    """Mean ± SE over seeds of the paper's accuracy per method and value of ``x`` (the varied hyper-parameter),
    with failed runs counted in ``n_failed``; ``by``: further columns kept apart (e.g. ``prior_convention``)."""
    if tidy.empty:
        raise ValueError("no runs in the ablation table")
    by = [c for c in (by or []) if c in tidy.columns]
    metric = accuracy_metric(str(tidy["dataset"].iloc[0]))
    s = summarise(tidy, by=["dataset", "pretraining", "method", "n_train", *by, x, "eval_set", "metric"])
    s = s[((s["metric"] == metric) & (s["eval_set"] == eval_set)) | s["metric"].isna()]
    return s.sort_values(["method", *by, x]).reset_index(drop=True)
