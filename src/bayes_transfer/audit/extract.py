"""From tidy tables to the pairs a claim part tests: one value per run, pairs of runs that differ only in the
factor a claim is about, the :class:`Part` that holds them, and the provenance text naming the runs they used.

A pair shares everything but that factor, above all the seed, because the same seed means the same downstream
training subsample for every method. Failed runs (``success`` False) are never averaged in: a pair with a
failed run is dropped and counted (``n_dropped``); only C2 treats a diverged run as an outcome (error 1.0).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayes_transfer.audit.settings import LOWER_IS_BETTER, AuditSettings, display
from bayes_transfer.audit.stats import INCONCLUSIVE, POWER_COLUMNS, PowerFn, paired_test, reason_text
from bayes_transfer.results.aggregate import accuracy_metric

#: file each table comes from (for messages and the "runs used" column)
TABLE_FILES = {
    "runs": "results/tables/runs.csv",
    "ablation_rank": "results/tables/ablation_rank.csv",
    "ablation_lambda": "results/tables/ablation_lambda.csv",
    "ablation_learned_mean": "results/tables/ablation_learned_mean.csv",
    "landscape": "results/tables/landscape.csv",
    "segmentation": "results/tables/segmentation_runs.csv",
}
TIDY_REQUIRED = ["success", "value"]
#: columns that can identify a run in a tidy table (and that the provenance text names)
IDENTITY = ["dataset", "arch", "pretraining", "method", "n_train", "truncation", "prior_convention", "prior_rank",
            "prior_scale", "seed"]
#: the unit of a method comparison on runs.csv: one pair per (dataset, arch, pretraining, size, seed)
RUN_UNIT = ["dataset", "arch", "pretraining", "n_train", "seed"]
PAIR_COLUMNS = ["unit", "stratum", "contrast", "treatment_value", "control_value", "detail", "paths"]

#: run values already extracted inside :func:`cached_values`, keyed by (table id, metric, eval set)
_CACHE: dict | None = None


@contextmanager
def cached_values() -> Iterator[None]:
    """Within this block each (table, metric, eval set) is extracted once (the tables must not change)."""
    global _CACHE
    _CACHE = {}
    try:
        yield
    finally:
        _CACHE = None


def _bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))


def _extract(table: pd.DataFrame, metric: str, eval_set: str | None, source: str) -> pd.DataFrame:
    missing = [c for c in TIDY_REQUIRED + ["metric"] if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; expected a tidy run table")
    cols = [k for k in IDENTITY if k in table.columns] + ["path"]
    t = table if "path" in table.columns else table.assign(path="")
    success = _bool(t["success"])
    failed = t.loc[~success, cols].assign(value=np.nan, success=False)
    ok = t[success]
    if eval_set is not None and "eval_set" in ok.columns:
        ok = ok[ok["eval_set"] == eval_set]
    if metric == "error":
        pieces = []
        datasets = ok["dataset"].unique() if "dataset" in ok.columns else [None]
        for ds in datasets:
            part = ok if ds is None else ok[ok["dataset"] == ds]
            acc = accuracy_metric(ds)
            sel = part[part["metric"] == acc]
            sel = sel.assign(value=1.0 - sel["value"])
            if acc == "accuracy" and sel.empty:
                sel = part[part["metric"] == "error"]
            pieces.append(sel)
        ok = pd.concat(pieces) if pieces else ok.iloc[:0]
    else:
        ok = ok[ok["metric"] == metric]
    ok = ok[cols + ["value"]].assign(success=True)
    return pd.concat([ok, failed], ignore_index=True)


def run_values(table: pd.DataFrame, metric: str, keys: list[str], *, source: str,
               eval_set: str | None = "test") -> tuple[pd.DataFrame, list[str]]:
    """One row per run: the run's ``keys`` (those the table has), ``value`` (NaN for a failed run),
    ``success`` and ``path``. ``metric='error'`` is the paper's error: 1 - accuracy, or 1 - mean per-class
    accuracy on Flowers-102 and Pets. Raises ValueError naming ``source`` for bad input."""
    source = TABLE_FILES.get(source, source)
    cache_key = (id(table), metric, eval_set)
    if _CACHE is not None and cache_key in _CACHE:
        values = _CACHE[cache_key]
    else:
        values = _extract(table, metric, eval_set, source)
        if _CACHE is not None:
            _CACHE[cache_key] = values
    keys = [k for k in keys if k in values.columns]
    dup = values.duplicated(keys, keep=False)
    if dup.any():
        example = values[dup].iloc[0][keys].to_dict()
        raise ValueError(f"{source}: {int(dup.sum())} rows share the run key {keys} for metric {metric!r} "
                         f"(e.g. {example}); expected one row per run")
    return values[keys + ["value", "success", "path"]], keys


def fmt_values(values) -> str:
    """Sorted distinct values, a run of consecutive integers as 'a-b'."""
    vals = sorted(pd.unique(pd.Series(list(values)).dropna()), key=lambda v: (str(type(v)), v))
    if not len(vals):
        return "-"
    if all(isinstance(v, (int, np.integer)) for v in vals) and len(vals) > 2 \
            and list(vals) == list(range(int(vals[0]), int(vals[-1]) + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ",".join(f"{v:g}" if isinstance(v, (float, np.floating)) else str(v) for v in vals)


def describe_runs(files: str, used: pd.DataFrame, what: str) -> str:
    """'file: what; col {values}; ...' over the columns that identify the runs in ``used``."""
    bits = [f"{TABLE_FILES.get(files, files)}: {what}" if what else TABLE_FILES.get(files, files)]
    for col in IDENTITY:
        if col in used.columns and used[col].notna().any():
            bits.append(f"{col} {fmt_values(used[col])}")
    return "; ".join(bits)


def used_by(values: pd.DataFrame, pairs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of ``values`` whose ``keys`` occur in ``pairs``: the runs that went into the pairs."""
    keys = [k for k in keys if k in values.columns and k in pairs.columns]
    if not len(pairs):
        return values.iloc[:0]
    if not keys:
        return values
    return values.merge(pairs[keys].drop_duplicates(), on=keys, how="inner")


@dataclass
class Part:
    """One tested statement of a claim: its pairs, the runs they used (``used``) and how to test them."""

    claim: str
    part: str
    statement: str
    contrast: str
    metric: str
    source: str
    pairs: pd.DataFrame = field(default_factory=lambda: empty_pairs())
    direction: int = 1
    margin: float | str = 0.0  # "delta": the config's smallest relevant effect of the metric
    relevance: bool = True
    n_dropped: int = 0
    used: pd.DataFrame | None = None  # the run rows the pairs used (provenance)
    what: str = ""  # what was compared, for the provenance text
    files: str = ""  # the table(s) the runs come from (default: the source's file)
    notes: list[str] = field(default_factory=list)  # e.g. pairs dropped for a failed run
    in_verdict: bool = True
    no_data: str = ""

    @property
    def runs(self) -> str:
        """Provenance: the file, what was compared and the values of every identifying column over exactly
        the runs the pairs used, then the notes."""
        files = self.files or TABLE_FILES.get(self.source, self.source)
        if self.used is None or not len(self.used) or not len(self.pairs):
            return "; ".join([files] + self.notes) if files else ""
        return "; ".join([describe_runs(files, self.used, self.what)] + self.notes)

    def evaluate(self, settings: AuditSettings, power: PowerFn | None = None) -> dict:
        """One row of claim_parts.csv: the paired test in display units, the verdict and why."""
        scale, unit = display(self.metric)
        delta = settings.delta(self.metric)
        relevance = delta if self.relevance else None
        margin = delta if self.margin == "delta" else float(self.margin)
        contrast = self.pairs["contrast"].to_numpy(float) if len(self.pairs) else np.array([])
        res = paired_test(contrast, alpha=settings.alpha, direction=self.direction, margin=margin,
                          relevance=relevance)
        extra = dict.fromkeys(POWER_COLUMNS, np.nan) | {"power_note": ""}
        if power is not None and res["n_pairs"] >= 2:
            got = dict(power(contrast, alpha=settings.alpha, direction=self.direction, margin=margin,
                             metric=self.metric, claim=self.claim, part=self.part))
            unknown = set(got) - set(POWER_COLUMNS)
            if unknown:
                raise ValueError(f"power analysis of {self.part}: unknown keys {sorted(unknown)}; expected some "
                                 f"of {list(POWER_COLUMNS)}")
            extra |= got
        res["reason"] = reason_text(res["rule"], res, alpha=settings.alpha, direction=self.direction,
                                    relevance=relevance, scale=scale, unit=unit,
                                    power_note=extra["power_note"] or None)
        if self.no_data:
            res["verdict"], res["reason"] = INCONCLUSIVE, f"no runs: {self.no_data}"
        elif len(self.pairs) == 0:
            res["reason"] = "no runs: no complete pairs" + (f" ({self.n_dropped} dropped)" if self.n_dropped else "")
        strata = self.pairs.groupby("stratum")["contrast"].mean() if len(self.pairs) else pd.Series(dtype=float)
        agree = int((self.direction * (strata - margin) > 0).sum())
        claim_text = ("> " if self.direction > 0 else "< ") + (f"{margin * scale:g} {unit}".strip())
        return {
            "claim": self.claim, "part": self.part, "statement": self.statement, "contrast": self.contrast,
            "claimed": claim_text, "metric": self.metric, "unit": unit,
            "effect": res["mean"] * scale, "ci_low": res["ci_low"] * scale, "ci_high": res["ci_high"] * scale,
            "d_z": res["d_z"], "degenerate": res["degenerate"], "p_value": res["p_value"],
            "p_wilcoxon": res["p_wilcoxon"], "n_pairs": res["n_pairs"], "n_dropped": self.n_dropped,
            "strata_agree": f"{agree}/{len(strata)}" if len(strata) else "",
            "verdict": res["verdict"], "reason": res["reason"],
            "mde": extra["mde"] * scale, "power_at_target": extra["power_at_target"],
            "pairs_needed": extra["pairs_needed"], "power_note": extra["power_note"],
            "in_verdict": self.in_verdict, "runs": self.runs,
        }


def empty_pairs() -> pd.DataFrame:
    return pd.DataFrame(columns=PAIR_COLUMNS)


def _labels(df: pd.DataFrame, cols: list[str]) -> list[str]:
    if not cols:
        return ["all"] * len(df)
    parts = [f"{c}=" + df[c].astype(str) for c in cols]
    out = parts[0]
    for p in parts[1:]:
        out = out + ", " + p
    return list(out)


def finish_pairs(rows: list[dict], unit_keys: list[str]) -> pd.DataFrame:
    """Add ``unit`` and ``stratum`` labels: the stratum is the unit minus its seed, over the keys that vary."""
    if not rows:
        return empty_pairs()
    df = pd.DataFrame(rows)
    if "n_train" in df.columns and df["n_train"].notna().all():
        df["n_train"] = df["n_train"].astype(int)
    varying = [k for k in unit_keys if k != "seed" and k in df.columns and df[k].nunique(dropna=False) > 1]
    df["unit"] = _labels(df, [k for k in unit_keys if k in df.columns])
    df["stratum"] = _labels(df, varying)
    return df


def compare(values: pd.DataFrame, column: str, treatment: str, control: str, unit_keys: list[str],
            lower_is_better: bool) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """Pairs of runs that differ only in ``column`` (treatment vs control), the number of pairs dropped for a
    failed run, and the runs the kept pairs used. The contrast is oriented so that positive means the
    treatment is better."""
    keys = [k for k in unit_keys if k in values.columns and k != column]
    a = values[values[column] == treatment]
    b = values[values[column] == control]
    j = a.merge(b, on=keys, suffixes=("_t", "_c"))
    bad = ~(j["success_t"] & j["success_c"])
    j = j[~bad]
    sign = 1.0 if not lower_is_better else -1.0
    rows = [dict({k: r[k] for k in keys}, contrast=sign * (r["value_t"] - r["value_c"]),
                 treatment_value=r["value_t"], control_value=r["value_c"], detail=f"{treatment} vs {control}",
                 paths=f"{r['path_t']};{r['path_c']}") for r in j.to_dict("records")]
    used = pd.concat([a, b]).merge(j[keys].drop_duplicates(), on=keys, how="inner") if keys else pd.concat([a, b])
    return finish_pairs(rows, keys), int(bad.sum()), used


def missing_table(table: pd.DataFrame | None, source: str) -> str:
    """Why a table cannot be used ('' when it can): not produced by this config, or empty."""
    if table is None:
        return f"this config produces no {TABLE_FILES.get(source, source)}"
    if table.empty:
        return f"{TABLE_FILES.get(source, source)} is empty"
    return ""


def table_for(parts: list[Part], table: pd.DataFrame | None, source: str, columns: list[str]) -> pd.DataFrame | None:
    """``table`` when it can be used, else None after giving every part the reason. Raises ValueError naming
    the file when the table lacks one of ``columns``."""
    reason = missing_table(table, source)
    if reason:
        for p in parts:
            p.no_data = reason
        return None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{TABLE_FILES.get(source, source)}: missing columns {missing}")
    return table


def method_part(claim: str, part: str, statement: str, table: pd.DataFrame | None, source: str, metric: str,
                column: str, treatment: str, control: str, unit_keys: list[str], *,
                methods: tuple[str, ...] | None = None, eval_set: str | None = "test") -> Part:
    """A part comparing ``treatment`` with ``control`` in ``column`` of ``table`` on ``metric``, one pair per
    ``unit_keys`` (restricted to ``methods`` when given)."""
    lower = LOWER_IS_BETTER[metric]
    better = "lower" if lower else "higher"
    contrast = (f"{metric}[{control}] - {metric}[{treatment}]" if lower
                else f"{metric}[{treatment}] - {metric}[{control}]")
    what = f"{treatment} vs {control}" if column == "method" else f"{column} {treatment} vs {control}"
    p = Part(claim, part, statement + f" ({better} {metric} is better)", contrast, metric, source, what=what)
    reason = missing_table(table, source)
    if reason:
        p.no_data = reason
        return p
    wanted = list(dict.fromkeys(unit_keys + [column] + (["method"] if methods else [])))
    values, keys = run_values(table, metric, wanted, source=source, eval_set=eval_set)
    if methods:
        values = values[values["method"].isin(methods)]
    have = set(values[column])
    lacking = [m for m in (treatment, control) if m not in have]
    if lacking:
        p.no_data = f"no {column} {' / '.join(lacking)} in {TABLE_FILES.get(source, source)}"
        return p
    pair_keys = [k for k in keys if k != column]
    p.pairs, p.n_dropped, p.used = compare(values, column, treatment, control, pair_keys, lower)
    if p.n_dropped:
        p.notes.append(f"{p.n_dropped} pairs dropped (failed run)")
    return p
