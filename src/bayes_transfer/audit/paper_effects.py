"""The paper's own effect for each claim part that its tables can measure, and the audit's power analysis.

A claim part compares a treatment with a control (two methods, or two pre-trainings). The paper's tables
(:func:`bayes_transfer.audit.reference.published_results`) hold both arms at the same cells (dataset, eval
set, backbone, pre-training or method, training size), so the paper's effect of a part is the mean over those
matched cells of the paired difference, oriented like the audit's contrast (positive = the treatment is better)
and in the metric's own units (fractions, as our runs store them). Parts whose metric the tables do not report
(NLL, ECE, the ablations) have no paper effect; their power analysis gives the minimum detectable effect only.

:func:`power_hook` is what the audit calls for every part (:data:`bayes_transfer.audit.stats.PowerFn`): it
returns the minimum detectable effect at the part's pairs (alpha as configured, power 0.8), the power against
the paper's effect and the number of pairs that would detect it, from the observed spread of the paired
differences (:func:`bayes_transfer.audit.power.power_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayes_transfer.audit.power import DEFAULT_POWER, power_summary
from bayes_transfer.audit.settings import DISPLAY, LOWER_IS_BETTER
from bayes_transfer.audit.stats import POWER_COLUMNS, PowerFn

#: part -> (column that differs, treatment, control, task, paper metric, our metric)
PAPER_CONTRASTS: dict[str, tuple[str, str, str, str, str, str]] = {
    "C3 SGD": ("method", "sgd_learned_prior", "sgd_transfer", "classification", "test_error", "error"),
    "C3 BNN": ("method", "bnn_learned_prior", "bnn_isotropic_prior", "classification", "test_error", "error"),
    "C4": ("method", "bnn_learned_prior", "sgd_learned_prior", "classification", "test_error", "error"),
    "C8": ("method", "bnn_learned_prior", "sgd_ensemble", "classification", "test_error", "error"),
    "C6 sgd_learned_prior": ("pretraining", "simclr", "supervised", "classification", "test_error", "error"),
    "C6 bnn_learned_prior": ("pretraining", "simclr", "supervised", "classification", "test_error", "error"),
    "C9 SGD": ("method", "sgd_learned_prior", "sgd_transfer", "segmentation", "miou", "miou"),
    "C9 BNN": ("method", "bnn_learned_prior", "bnn_isotropic_prior", "segmentation", "miou", "miou"),
}
_CELL = ["dataset", "eval_set", "backbone", "pretraining", "method", "n_train"]


def paper_effect(part: str, published: pd.DataFrame | None = None) -> tuple[float, int] | None:
    """The paper's mean paired difference for ``part`` in our metric's units (positive: the treatment is
    better) and the number of matched cells, or None when its tables cannot measure the part."""
    if part not in PAPER_CONTRASTS:
        return None
    column, treat, ctrl, task, paper_metric, metric = PAPER_CONTRASTS[part]
    if published is None:
        from bayes_transfer.audit.reference import published_results

        published = published_results()
    rows = published[(published["task"] == task) & (published["metric"] == paper_metric)].copy()
    if part.startswith("C6 "):
        rows = rows[rows["method"] == part.split(" ", 1)[1]]
    rows = rows[rows["eval_set"].isin(["test", "val"])]
    keys = [k for k in _CELL if k != column]
    # a cell printed in two tables counts once
    cells = rows.groupby(keys + [column], dropna=False)["value"].mean().reset_index()
    a = cells[cells[column] == treat].drop(columns=column)
    b = cells[cells[column] == ctrl].drop(columns=column)
    j = a.merge(b, on=keys, suffixes=("_t", "_c"))
    if not len(j):
        return None
    # the paper prints test error and mean IoU in percent; ours are fractions. Test error -> our "error".
    diff = (j["value_t"] - j["value_c"]).to_numpy(float) / 100.0
    sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0
    return float(sign * np.mean(diff)), int(len(j))


def power_hook(published: pd.DataFrame | None = None, power: float = DEFAULT_POWER) -> PowerFn:
    """The audit's power analysis: per part, the minimum detectable effect and, where the paper's tables give
    an effect for it, the power against that effect and the pairs needed (see the module docstring)."""
    effects: dict[str, tuple[float, int] | None] = {}

    def analyse(contrast, *, alpha: float, direction: int, margin: float, metric: str, claim: str,
                part: str) -> Mapping:
        if part not in effects:
            effects[part] = paper_effect(part, published)
        target = effects[part]
        summary = power_summary(contrast, alpha=alpha, power=power,
                                target_effect=None if target is None else target[0])
        scale, unit = DISPLAY.get(metric, (1.0, ""))
        out = summary.as_dict(scale, unit)
        note = out["power_note"]
        if target is not None and math.isfinite(target[0]):
            note += f" (paper's effect from {target[1]} matched cells of its tables)"
        else:
            note += " (the paper's tables give no effect for this part)"
        return {k: out[k] for k in POWER_COLUMNS if k in out} | {"power_note": note}

    return analyse
