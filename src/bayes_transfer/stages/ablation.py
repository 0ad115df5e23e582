"""The ablation stages behind the paper's Figs. 3a, 3b and 3d, and the pooled reliability diagrams of Fig. 9.

* :func:`ablation_stage` refits one method at one training size for every seed while one hyper-parameter
  walks over a list (``prior_rank`` for Fig. 3b, ``prior_scale`` = lambda for Fig. 3d). Every other value
  is the one tuning selected for that method and size, so an ablation answers "what if only this changed".
  The lambda grid runs under each of ``ablations.lambda.conventions`` (:data:`LAMBDA_CONVENTIONS`): the exact
  rescaling with the configured prior update, and the authors' device (METHOD_NOTES §5b).
* Fig. 3a (the loss along the learned prior's top directions and random ones, BatchNorm recomputed at every
  point, with the source-loss control) is :func:`bayes_transfer.stages.landscape.landscape_stage`.
* :func:`pooled_reliability` pools the reliability bins of several runs (Fig. 9).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from bayes_transfer.inference.prior_step import AUTHORS_CLIP_NORM
from bayes_transfer.stages.experiment import fit_stage

if TYPE_CHECKING:  # pandas is imported by pooled_reliability only (an ablation fit job never needs it)
    import pandas as pd

log = logging.getLogger("bayes_transfer.stages.ablation")

#: the hyper-parameters an ablation may vary, and the figure each one belongs to
ABLATION_KEYS = {"prior_rank": "Fig. 3b (rank)", "prior_scale": "Fig. 3d (rescaling lambda)"}

#: the conventions the lambda ablation runs under, as the hyper-parameters they set over the selection:
#: ``exact`` rescales the covariance to lambda Sigma and keeps the configured ``prior_update`` (default: the
#: stable split) and ``grad_clip``; ``priorbox`` is the authors' code: variance lambda + 0.1, factor lambda,
#: the whole prior gradient added explicitly and the gradient norm clipped to 2 before every step
LAMBDA_CONVENTIONS = {
    "exact": {"prior_convention": "exact"},
    "priorbox": {"prior_convention": "priorbox", "prior_update": "explicit", "grad_clip": AUTHORS_CLIP_NORM},
}


def convention_overrides(convention: str) -> dict:
    """The hyper-parameters of one of :data:`LAMBDA_CONVENTIONS` (ValueError naming the known ones)."""
    if convention not in LAMBDA_CONVENTIONS:
        raise ValueError(f"unknown prior convention {convention!r} (ablations.lambda.conventions); known: "
                         f"{', '.join(LAMBDA_CONVENTIONS)}")
    return dict(LAMBDA_CONVENTIONS[convention])


def ablation_stage(method: str, n: int, pretraining: str, seeds: Sequence[int], key: str, values: Sequence,
                outs: Sequence[Sequence[str]], *, checkpoint: str, prior_path: str | None,
                tuning_path: str | None, data_cfg: Mapping, model_cfg: Mapping, train_cfg: Mapping,
                fixed: Mapping | None = None, convention: str | None = None, device: str | None = None
                ) -> list[dict]:
    """For each value of ``key``: fit every seed with ``{key: value} | fixed`` overriding the selection, and
    the settings of ``convention`` (one of :data:`LAMBDA_CONVENTIONS`) if given.

    ``outs[i][j]`` is the result file of ``values[i]`` and ``seeds[j]``.
    """
    if key not in ABLATION_KEYS:
        raise ValueError(f"ablation_stage: cannot vary {key!r}; one of: {', '.join(ABLATION_KEYS)}")
    if len(outs) != len(values) or any(len(o) != len(seeds) for o in outs):
        raise ValueError("ablation_stage: one list of per-seed output paths per swept value is needed")
    records = []
    for value, value_outs in zip(values, outs):
        t0 = time.perf_counter()
        overrides = dict(fixed or {}) | (convention_overrides(convention) if convention else {}) | {key: value}
        records += fit_stage(method, n, pretraining, list(seeds), checkpoint=checkpoint, prior_path=prior_path,
                             tuning_path=tuning_path, data_cfg=data_cfg, model_cfg=model_cfg,
                             train_cfg=train_cfg, outs=list(value_outs), overrides=overrides, device=device,
                             score_ood=False, prune=False)  # the ablations' figures score neither OOD nor pruning
        log.info("ablation %s %s=%s%s: %d runs in %.1f s", method, key, value,
                 f" ({convention} convention)" if convention else "", len(seeds), time.perf_counter() - t0)
    return records


def pooled_reliability(paths: Sequence[str | Path], eval_set: str = "test") -> pd.DataFrame:
    """Reliability bins of several runs (e.g. one method's seeds) pooled: counts add up, accuracy and
    confidence are count-weighted. Failed runs are skipped and counted in the ``n_failed`` column."""
    import pandas as pd

    total, n_runs, n_failed = None, 0, 0
    for path in paths:
        rec = json.loads(Path(path).read_text())
        if not rec["success"]:
            n_failed += 1
            continue
        bins = pd.DataFrame(rec["metrics"][eval_set]["reliability"])
        bins["conf_sum"] = bins["mean_confidence"].fillna(0) * bins["count"]
        bins["acc_sum"] = bins["accuracy"].fillna(0) * bins["count"]
        part = bins[["bin_lower", "bin_upper", "count", "conf_sum", "acc_sum"]]
        if total is None:
            total = part.copy()
        else:
            if not np.allclose(total["bin_lower"], part["bin_lower"]):
                raise ValueError(f"{path}: reliability bins differ from the other runs'")
            total[["count", "conf_sum", "acc_sum"]] += part[["count", "conf_sum", "acc_sum"]].values
        n_runs += 1
    if total is None:
        return pd.DataFrame(columns=["bin_lower", "bin_upper", "count", "mean_confidence", "accuracy",
                                     "n_runs", "n_failed"]).assign(n_failed=n_failed)
    count = total["count"].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        total["mean_confidence"] = np.where(count > 0, total["conf_sum"] / count, np.nan)
        total["accuracy"] = np.where(count > 0, total["acc_sum"] / count, np.nan)
    total["n_runs"], total["n_failed"] = n_runs, n_failed
    return total.drop(columns=["conf_sum", "acc_sum"])
