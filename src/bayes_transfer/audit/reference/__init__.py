"""Reference numbers shipped as package data: the paper's published table cells, the reproducibility
report's verdicts and the published reproductions' findings per claim (see SOURCE.md beside this file for where
each comes from)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

PUBLISHED_COLUMNS = ["table", "task", "dataset", "eval_set", "backbone", "pretraining", "method", "n_train",
                     "metric", "value", "se"]
VERDICT_COLUMNS = ["claim", "report_claim", "report_statement", "report_verdict", "report_basis"]
REPRODUCTION_COLUMNS = ["claim", "flowers_verdict", "flowers_basis", "harvey_verdict", "harvey_basis"]
#: the published reproductions: column prefix in reproductions.csv -> the source, for headers and captions
REPRODUCTION_SOURCES = {
    "flowers": "ML Reproducibility Challenge report on Oxford Flowers-102 "
               "(shared/papers/reproducibility_report_flowers102.txt)",
    "harvey": "Harvey, Petrov & Hughes, TMLR 2024 (arXiv 2405.15583)",
}
#: the values a reproduction's verdict column may hold
REPRODUCTION_VERDICTS = ("supported", "partly supported", "not supported", "not examined")


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


def reproductions() -> pd.DataFrame:
    """Per audit claim (C1-C11) the Flowers-102 report's verdict and Harvey et al.'s (TMLR 2024) finding, each
    with its basis; verdicts from :data:`REPRODUCTION_VERDICTS` ("not examined" where a source does not test
    the claim). Raises ValueError naming the file for a verdict outside that set."""
    table = _read("reproductions.csv", REPRODUCTION_COLUMNS, dtype=str, keep_default_na=False)
    for prefix in REPRODUCTION_SOURCES:
        bad = table.loc[~table[f"{prefix}_verdict"].isin(REPRODUCTION_VERDICTS), ["claim", f"{prefix}_verdict"]]
        if len(bad):
            raise ValueError(f"bayes_transfer/audit/reference/reproductions.csv: {prefix}_verdict "
                             f"{bad.iloc[0, 1]!r} for {bad.iloc[0, 0]}; expected one of {list(REPRODUCTION_VERDICTS)}")
    return table
