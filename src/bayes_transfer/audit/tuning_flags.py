"""The tuning flags of a config's selections: a selection on a grid edge, at chance accuracy on validation, or
scored on fewer than 50 validation examples (written by :func:`bayes_transfer.stages.experiment.tune_stage`).

A flagged selection qualifies every claim that uses the method at that size: an edge means a wider grid might
do better (the baseline may be a straw man), chance accuracy means the method never learned on validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

COLUMNS = ["pretraining", "method", "n_train", "flag", "detail", "selected"]


def tuning_flags(records: Iterable[Mapping]) -> pd.DataFrame:
    """One row per flag of each tuning record (the JSON of a tuning file), in :data:`COLUMNS`."""
    rows = []
    for r in records:
        base = {"pretraining": r.get("pretraining"), "method": r.get("method"), "n_train": r.get("n_train"),
                "selected": json.dumps(r.get("selected_grid", r.get("selected")), sort_keys=True)}
        if not r.get("success", True):
            rows.append(base | {"flag": "failed", "detail": r.get("reason", "")})
        for key, side in sorted((r.get("edge") or {}).items()):
            rows.append(base | {"flag": "edge", "detail": f"{key} at the {side} edge of its grid"})
        if r.get("chance"):
            acc = (r.get("selected_scores") or {}).get("accuracy", float("nan"))
            rows.append(base | {"flag": "chance", "detail": f"validation accuracy {acc:.3f} <= chance level "
                                                            f"{r.get('chance_accuracy', float('nan')):.3f}"})
        if r.get("small_validation"):
            rows.append(base | {"flag": "small_validation",
                                "detail": f"scored on {r.get('n_tune_val')} validation examples"})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["pretraining", "method", "n_train", "flag"],
                                                           kind="stable", ignore_index=True)


def read_tuning_flags(paths: Iterable[str | Path]) -> pd.DataFrame:
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable tuning file ({err})") from err
    return tuning_flags(records)


def tuning_flags_markdown(flags: pd.DataFrame, n_files: int) -> str:
    head = (f"# Tuning flags\n\n{n_files} tuning file(s); {len(flags)} flag(s). `edge`: the selected value is the "
            "smallest or largest of its grid (a wider grid might do better; a two-value key is always at an edge); "
            "`chance`: the selection's validation accuracy is within 2 standard errors of 1/classes; "
            "`small_validation`: fewer than 50 validation examples; `failed`: every grid point failed.\n\n")
    if flags.empty:
        return head + "No selection is flagged.\n"
    lines = ["| pretraining | method | n | flag | detail | selected (as listed) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.pretraining} | {r.method} | {r.n_train} | {r.flag} | {r.detail} | `{r.selected}` |"
              for r in flags.itertuples()]
    return head + "\n".join(lines) + "\n"
