"""Our verdicts beside the published reproductions' and beside another tier's: the claims overview's columns.

Each tier of the pipeline (the embedded digits default, the Fashion-MNIST evidence tier, paper scale) runs the
same audit on its own runs. A tier's front page shows, per claim: the paper's statement, the Flowers-102
report's verdict, Harvey et al.'s finding (both from :func:`bayes_transfer.audit.reference.reproductions`), our
verdict on this tier's runs, and our verdict on each other tier listed in the config's ``audit.tiers`` (label ->
the ``claims.csv`` another run of the audit wrote, e.g. a dated record under docs/results/). Those other
verdicts are read and shown, never recomputed or combined with this tier's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from bayes_transfer.audit.stats import INCONCLUSIVE, VERDICTS

#: shown for a claim whose every part found no runs in the tier (e.g. segmentation switched off there)
NOT_RUN = "not run"

#: tier label of each dataset the pipeline runs (any other dataset is paper scale)
TIER_LABELS = {"digits": "default", "fashion_mnist": "fashion"}
#: what a tier's verdicts can and cannot say about the paper (the front page states it)
TIER_SCOPE = {
    "default": (
        "the embedded default: sklearn's 8 x 8 digits, a 77k-parameter ResNet, digits 0-4 as the source task and "
        "5-9 downstream. It shows that every stage runs and that the audit detects a real effect and invents none "
        "(the controls); a verdict here is about this miniature, not about the paper's ImageNet-to-CIFAR transfer."),
    "fashion": (
        "the Fashion-MNIST evidence tier: real 28 px images, a 308k-parameter ResNet with BatchNorm pre-trained "
        "here on 30,000 source images (classes 0-4), downstream sets of 10-1,000 images (classes 5-9). It tests "
        "the paper's mechanisms in its regime at small scale; it cannot speak for ImageNet-scale priors, 224 px "
        "images or ResNet-50."),
    "paper scale": (
        "paper scale: the paper's datasets, checkpoints and protocol (configs/paper.yaml); a verdict here speaks "
        "to the paper's claims directly, within the runs' number of seeds."),
}


def tier_label(dataset: str) -> str:
    """The tier a config's ``data.dataset`` belongs to: ``default``, ``fashion`` or ``paper scale``."""
    return TIER_LABELS.get(dataset, "paper scale")


def shown_verdict(row: Mapping) -> str:
    """A claim's verdict as the overview shows it: "not run" when it is inconclusive only because every one of
    its parts found no runs in the tier (the parts' reasons say "no runs"), else the verdict."""
    why, parts = str(row.get("why") or ""), int(float(row.get("parts") or 0))
    if row["verdict"] == INCONCLUSIVE and parts and why.count("(no runs") == parts:
        return NOT_RUN
    return row["verdict"]


def read_tier_verdicts(label: str, path: str | Path) -> pd.Series:
    """Claim -> shown verdict (:func:`shown_verdict`) of another tier's audit (its ``claims.csv``); ValueError
    naming the file and the key ``audit.tiers.<label>`` when it is not such a table."""
    where = f"audit.tiers.{label}: {path}"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{where}: not a readable claims table ({err}); expected the results/audit/claims.csv "
                         "of another run of the audit") from err
    missing = {"claim", "verdict"} - set(table.columns)
    if missing:
        raise ValueError(f"{where}: no column {sorted(missing)}; expected the results/audit/claims.csv of another "
                         "run of the audit")
    bad = table.loc[~table["verdict"].isin(VERDICTS)]
    if len(bad):
        raise ValueError(f"{where}: verdict {bad['verdict'].iloc[0]!r} for {bad['claim'].iloc[0]}; expected one "
                         f"of {list(VERDICTS)}")
    return pd.Series([shown_verdict(r) for r in table.to_dict("records")], index=table["claim"], dtype=object)


def beside(claims: pd.DataFrame, this_tier: str, others: Mapping[str, pd.Series] | None = None,
           reproductions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per claim: the Flowers-102 report's and Harvey et al.'s verdicts, ours on this tier, ours on each other
    tier (claim ids absent from a source: "not examined" for the reproductions, "not run" for a tier)."""
    from bayes_transfer.audit import reference

    reproductions = reference.reproductions() if reproductions is None else reproductions
    rep = reproductions.set_index("claim")
    out = pd.DataFrame({"claim": claims["claim"].to_numpy()})
    for prefix, header in (("flowers", "Flowers-102 report"), ("harvey", "Harvey et al. (TMLR 2024)")):
        out[header] = [rep[f"{prefix}_verdict"].get(c, "not examined") for c in out["claim"]]
    out[f"ours ({this_tier})"] = [shown_verdict(r) for r in claims.to_dict("records")]
    for label, verdicts in (others or {}).items():
        if label == this_tier:
            raise ValueError(f"audit.tiers.{label}: this run is the {this_tier!r} tier; list other tiers only")
        out[f"ours ({label})"] = [verdicts.get(c, NOT_RUN) for c in out["claim"]]
    return out
