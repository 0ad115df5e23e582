"""The ablation stages behind the paper's Figs. 3a, 3b and 3d, and the pooled reliability diagrams of Fig. 9.

* :func:`sweep_stage` refits one method at one training size for every seed while one hyper-parameter
  walks over a list (``prior_rank`` for Fig. 3b, ``prior_scale`` = lambda for Fig. 3d). Every other value
  is the one tuning selected for that method and size, so a sweep answers "what if only this changed".
* :func:`landscape_stage` measures the downstream loss along the learned prior's top directions and
  along random directions (Fig. 3a, see :mod:`bayes_transfer.stages.landscape`).
* :func:`pooled_reliability` pools the reliability bins of several runs (Fig. 9).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from bayes_transfer.stages import landscape
from bayes_transfer.device import get_device
from bayes_transfer.stages.experiment import code_version, fit_stage, load_pretrained, load_task, training_subset
from bayes_transfer.inference.methods import downstream_model
from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior

log = logging.getLogger("bayes_transfer.stages.ablation")

#: the hyper-parameters a sweep may vary, and the figure each one belongs to
SWEEP_KEYS = {"prior_rank": "Fig. 3b (rank)", "prior_scale": "Fig. 3d (rescaling lambda)"}


def sweep_stage(method: str, n: int, pretraining: str, seeds: Sequence[int], key: str, values: Sequence,
                outs: Sequence[Sequence[str]], *, checkpoint: str, prior_path: str | None,
                tuning_path: str | None, data_cfg: Mapping, model_cfg: Mapping, train_cfg: Mapping,
                fixed: Mapping | None = None, device: str | None = None) -> list[dict]:
    """For each value of ``key``: fit every seed with ``{key: value} | fixed`` overriding the selection.

    ``outs[i][j]`` is the result file of ``values[i]`` and ``seeds[j]``.
    """
    if key not in SWEEP_KEYS:
        raise ValueError(f"sweep_stage: cannot sweep {key!r}; sweepable: {', '.join(SWEEP_KEYS)}")
    if len(outs) != len(values) or any(len(o) != len(seeds) for o in outs):
        raise ValueError("sweep_stage: one list of per-seed output paths per swept value is needed")
    records = []
    for value, value_outs in zip(values, outs):
        t0 = time.perf_counter()
        overrides = dict(fixed or {}) | {key: value}
        records += fit_stage(method, n, pretraining, list(seeds), checkpoint=checkpoint, prior_path=prior_path,
                             tuning_path=tuning_path, data_cfg=data_cfg, model_cfg=model_cfg,
                             train_cfg=train_cfg, outs=list(value_outs), overrides=overrides, device=device)
        log.info("sweep %s %s=%s: %d runs in %.1f s", method, key, value, len(seeds), time.perf_counter() - t0)
    return records


def landscape_stage(pretraining: str, seeds: Sequence[int], *, checkpoint: str, prior_path: str,
                    data_cfg: Mapping, model_cfg: Mapping, cfg: Mapping, out: str,
                    device: str | None = None) -> pd.DataFrame:
    """Test loss along the prior's top directions and random ones, for each seed; one tidy CSV.

    ``cfg`` keys: ``n_train`` (downstream examples the linear head is trained on; the seed draws them),
    ``prior_directions``, ``random_directions``, ``max_distance``, ``points``, ``head_weight_decay``.
    Columns: pretraining, seed, direction_type (prior|random), direction, distance, loss.
    """
    task = load_task(data_cfg)
    dev = get_device(device)
    state = load_pretrained(checkpoint)["state_dict"]
    prior = GaussianPrior.load(prior_path)
    top = landscape.prior_directions(prior, int(cfg["prior_directions"]))
    distances = np.linspace(-float(cfg["max_distance"]), float(cfg["max_distance"]), int(cfg["points"]))
    test_x, test_y = _tensors(task, task.test)
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        model = downstream_model(model_cfg["arch"], state, task.num_classes, seed, model_cfg.get("kwargs")).to(dev)
        model.eval()
        backbone, _ = split_named_parameters(model)
        prior.check_params(backbone)
        train_x, train_y = _tensors(task, training_subset(task, int(cfg["n_train"]), seed))
        with torch.no_grad():
            feats = model.features(train_x.to(dev))
        head = landscape.train_linear_head(feats.cpu(), train_y, task.num_classes,
                                           weight_decay=float(cfg["head_weight_decay"])).to(dev)
        gen = torch.Generator().manual_seed(int(seed))
        theta = {k: v.detach().cpu() for k, v in backbone.items()}
        directions = [("prior", i, d) for i, d in enumerate(top)]
        directions += [("random", i, d) for i, d in
                       enumerate(landscape.random_directions(theta, int(cfg["random_directions"]), gen))]
        for kind, i, d in directions:
            d = landscape.filter_normalise(d, theta)
            losses = landscape.loss_along(model, head, d, distances, test_x.to(dev), test_y.to(dev))
            rows += [{"pretraining": pretraining, "seed": int(seed), "direction_type": kind, "direction": i,
                      "distance": float(t), "loss": float(v)} for t, v in zip(distances, losses)]
        log.info("landscape %s seed %d: %d directions in %.1f s", pretraining, seed, len(directions),
                 time.perf_counter() - t0)
    table = pd.DataFrame(rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.attrs["code_version"] = code_version()
    table.to_csv(out, index=False)
    return table


def _tensors(task, ds) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, torch.utils.data.TensorDataset):
        return ds.tensors[0], ds.tensors[1].long()
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def pooled_reliability(paths: Sequence[str | Path], eval_set: str = "test") -> pd.DataFrame:
    """Reliability bins of several runs (e.g. one method's seeds) pooled: counts add up, accuracy and
    confidence are count-weighted. Failed runs are skipped and counted in the ``n_failed`` column."""
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
