"""The whole audit: read the tidy tables the workflow produced, compare cells with the paper, evaluate the
claims, and write every output file (:data:`OUTPUTS`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from bayes_transfer.audit import render
from bayes_transfer.audit.cells import compare_cells, our_cells
from bayes_transfer.audit.claims import evaluate_claims
from bayes_transfer.audit.related_claims import with_related_claims
from bayes_transfer.audit.settings import AuditSettings
from bayes_transfer.audit.stats import PowerFn
from bayes_transfer.io import atomic_write_text, write_csv

OUTPUTS = ("cells_csv", "cells_md", "cells_html", "claims_csv", "claims_md", "claims_html", "overview_html",
           "parts_csv", "pairs_csv", "strata_csv")


def run_audit(tables: Mapping[str, pd.DataFrame | None], settings: AuditSettings | None = None,
              published: pd.DataFrame | None = None, report: pd.DataFrame | None = None,
              power: PowerFn | None = None, controls: pd.DataFrame | None = None, tier: str | None = None,
              other_tiers: Mapping[str, pd.Series] | None = None) -> dict:
    """The per-cell table and the claims over the given tidy tables (keys as in extract.TABLE_FILES;
    None = not produced by this config). ``published``/``report`` default to the package's reference data;
    ``power``: the power analysis of each part (see :data:`bayes_transfer.audit.stats.PowerFn`); ``controls``:
    the controls rule's claims table (results/controls/claims.csv, docs/controls.md), shown as the pages'
    "Pipeline controls" table (None: the config runs no controls); ``tier``: this run's tier
    (:func:`bayes_transfer.audit.tiers.tier_label`), which puts the published reproductions' verdicts and
    ``other_tiers`` (label -> claim -> verdict, :func:`bayes_transfer.audit.tiers.read_tier_verdicts`) beside ours."""
    from bayes_transfer.audit import reference

    settings = settings or AuditSettings()
    published = reference.published_results() if published is None else published
    report = reference.report_verdicts() if report is None else report
    cells = compare_cells(published, our_cells(tables.get("runs"), tables.get("segmentation")))
    # R1, R2 (issue 14's related methods) after C1-C11
    claims = with_related_claims(evaluate_claims(tables, settings, report, power), tables, settings, power)
    out = {"cells": cells, **claims, **({} if controls is None else {"controls": controls})}
    if tier is not None:
        from bayes_transfer.audit.tiers import beside

        out |= {"tier": tier, "beside": beside(claims["claims"], tier, other_tiers)}
    return out


def write_audit(result: Mapping[str, pd.DataFrame], outputs: Mapping[str, str | Path],
                settings: AuditSettings | None = None) -> None:
    """Write the audit's files; ``outputs`` maps names in :data:`OUTPUTS` to paths (missing names are skipped)."""
    settings = settings or AuditSettings()
    texts = {
        "cells_md": lambda: render.cells_markdown(result["cells"]),
        "cells_html": lambda: render.cells_html(result["cells"]),
        "claims_md": lambda: render.claims_markdown(result, settings),
        "claims_html": lambda: render.claims_html(result, settings),
        "overview_html": lambda: render.claims_fragment(result, settings),
    }
    tables = {"cells_csv": "cells", "claims_csv": "claims", "parts_csv": "parts", "pairs_csv": "pairs",
              "strata_csv": "strata"}
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown audit outputs {sorted(unknown)}; expected some of {list(OUTPUTS)}")
    for name, path in outputs.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if name in tables:
            write_csv(path, result[tables[name]])
        else:
            atomic_write_text(path, texts[name]())


def read_controls(path: str | Path | None) -> pd.DataFrame | None:
    """The controls rule's claims table (one row per control and claim), or None when ``path`` is None."""
    if path is None:
        return None
    table = read_tables({"controls": path})["controls"]
    missing = {"control", "claim", "verdict"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not the controls' claims table (no column {sorted(missing)}); expected "
                         "results/controls/claims.csv of the controls rule")
    for col in ("degenerate", "unit", "decisive_reason"):  # empty text reads back from CSV as NaN
        if col in table.columns:
            table[col] = table[col].astype(object).where(table[col].notna(), "")
    return table


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
