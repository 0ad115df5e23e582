"""Reference numbers shipped as package data: the paper's published table cells and the reproducibility
report's verdicts (see SOURCE.md beside this file for where each comes from)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

PUBLISHED_COLUMNS = ["table", "task", "dataset", "eval_set", "backbone", "pretraining", "method", "n_train",
                     "metric", "value", "se"]
VERDICT_COLUMNS = ["claim", "report_claim", "report_statement", "report_verdict", "report_basis"]


def _read(name: str, columns: list[str], **kwargs) -> pd.DataFrame:
    with resources.files(__name__).joinpath(name).open("r", encoding="utf-8") as fh:
        table = pd.read_csv(fh, **kwargs)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"bayes_transfer/audit/reference/{name}: missing columns {missing}")
    return table


def published_results() -> pd.DataFrame:
    """The paper's 320 table cells (values in percent; ``n_train`` as text because segmentation says 'full')."""
    return _read("published_results.csv", PUBLISHED_COLUMNS, dtype={"n_train": str})


def report_verdicts() -> pd.DataFrame:
    """The reproducibility report's conclusions on its claims 1-5, keyed by the audit's claim ids."""
    return _read("report_verdicts.csv", VERDICT_COLUMNS)
