"""The stages of the paper's protocol as functions of explicit config slices (called by the workflow).

Each stage reads plain dicts (the slices of ``config.yaml`` a Snakemake rule passes through ``params``),
writes its own files atomically and returns what it wrote. Nothing here imports Snakemake.

Stages: :func:`pretrain_stage` -> :func:`prior_stage` (the source side, :mod:`bayes_transfer.stages.source`,
re-exported here) -> :func:`tune_stage` -> :func:`fit_stage` (the downstream side, this module).

Tuning protocol: for training size n, every grid point is fitted on a class-balanced subsample of n examples
(tuning seed) and scored on a validation set. ``tuning.validation: task`` (default): the subsample comes from
the pool without the dataset's own validation split, all n examples train each point (the fits see exactly as
many training examples as the evaluation fits at that n) and the validation split (150 digits) scores it;
``holdout``: the subsample is cut into a training and a held-out part (``holdout_fraction``), the paper's
protocol for datasets without a validation split, and noise at small n. ``tuning.score``: the validation NLL
(default) or the selection metric's error with ties broken by the NLL (:mod:`bayes_transfer.stages.selection`).
The selected values then retrain on n examples of the whole pool for each evaluation seed. Each tuning file
flags a selection on a grid edge, at chance accuracy, or scored on fewer than 50 examples. The data side is
:mod:`bayes_transfer.stages.task`; files are written atomically by :mod:`bayes_transfer.io`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import torch
from torch.utils.data import Dataset

from bayes_transfer.device import get_device
from bayes_transfer.inference.loop import FitResult, Hyper
from bayes_transfer.inference.methods import METHODS, run_method
from bayes_transfer.inference.state import remove_checkpoints, resumable
from bayes_transfer.integrity import input_checksums
from bayes_transfer.io import write_json
from bayes_transfer.models.resnets import build_model
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.results import metrics, ood
from bayes_transfer.stages import selection
from bayes_transfer.stages.job import code_version, set_threads
from bayes_transfer.stages.pruning import posterior_pruning_curve
from bayes_transfer.stages.source import (convert_stage, import_prior_stage, load_pretrained, prior_stage,
                                          pretrain_stage, warn_if_drift_dominated)
from bayes_transfer.stages.task import Task, load_task, training_subset

#: the downstream stages defined here, and the source stages and job helpers the workflow's scripts import from
#: here too (they live in :mod:`bayes_transfer.stages.source` and :mod:`bayes_transfer.stages.job`)
__all__ = ["tune_stage", "fit_stage", "grid_points", "chain_seeds", "average_chains",
           "pretrain_stage", "convert_stage", "load_pretrained", "prior_stage", "warn_if_drift_dominated",
           "import_prior_stage", "code_version", "set_threads", "write_json"]

log = logging.getLogger("bayes_transfer.stages.experiment")


def _point_metrics(task: Task, probs: torch.Tensor, labels: torch.Tensor, metric: str) -> dict:
    """Validation NLL, accuracy and the error of the selection ``metric`` of one grid point."""
    nll, acc = metrics.nll(probs, labels), metrics.accuracy(probs, labels)
    if metric == "mean_per_class_accuracy":
        error = 1.0 - metrics.mean_per_class_accuracy(probs, labels, task.num_classes)
    elif metric == "nll":
        error = nll
    else:
        error = 1.0 - acc
    return {"nll": nll, "accuracy": acc, "error": error}


def _labels_tensor(task: Task, ds: Dataset) -> torch.Tensor:
    return torch.as_tensor(task.labels(ds), dtype=torch.long)


def grid_points(grid: Mapping[str, list]) -> list[dict]:
    """Every combination of the grid's values (keys sorted), as listed."""
    return [point for point, _ in selection.expand_grid(grid)]


def _flags(task: Task, grid: Mapping, best: Mapping | None, n_val: int) -> dict:
    flags = {"edge": {}, "chance": False, "small_validation": n_val < selection.MIN_VALIDATION}
    if best is not None:
        flags["edge"] = selection.grid_edges(grid, best["values"])
        flags["chance"] = selection.at_chance(best["accuracy"], task.num_classes, n_val)
    return flags


def tune_stage(method: str, sizes: list[int], pretraining: str, *, checkpoint: str, prior_path: str | None,
               data_cfg: Mapping, model_cfg: Mapping, train_cfg: Mapping, grid: Mapping[str, list],
               tuning_cfg: Mapping, outs: list[str], device: str | None = None,
               checkpoint_every: int = 0) -> list[dict]:
    """For each size: fit every grid point on n tuning examples, score it on the validation set
    (``tuning.validation``), and write the selection, its flags and every grid point's scores to the size's file.

    The file's ``selected`` are the values fitted (with ``tuning.weight_decay_over_lr`` the weight decay
    divided by the learning rate), ``selected_grid`` the values as the grid lists them; ``edge`` ({key: "low" |
    "high"}), ``chance`` (validation accuracy within 2 standard errors of 1/classes) and ``small_validation``
    (fewer than 50 validation examples) flag a selection the audit reports.

    ``checkpoint_every > 0``: every fit is resumable (states ``<out>.point<i>.fit<k>.ckpt``, see
    :func:`~bayes_transfer.inference.state.resumable`, one prefix per grid point); a rerun after a kill skips
    finished grid points and continues the interrupted one. The states are removed once every output is
    written."""
    from bayes_transfer.stages.tuning import Tuning  # which imports this module's scoring helpers

    if len(outs) != len(sizes):
        raise ValueError("one output path per training size is needed")
    setting = Tuning(method, pretraining, checkpoint, prior_path, data_cfg, model_cfg, train_cfg, grid, tuning_cfg,
                     device)
    steps = int(train_cfg.get("steps", Hyper.steps))
    results = []
    for n, out in zip(sizes, outs):
        t0 = time.perf_counter()
        rows = [setting.fit(n, i, steps, f"{out}.point{i}", checkpoint_every) for i in range(len(setting.points))]
        result = setting.record(n, selection.select(rows, setting.score), rows, None, time.perf_counter() - t0,
                                setting.inputs(), out)
        write_json(out, result)
        results.append(result)
    for out in outs:
        remove_checkpoints(out)
    return results


def chain_seeds(method: str, seed: int, chains: int) -> list[int]:
    """The seeds of the ``chains`` independent chains of a Bayesian method (one for the SGD methods, whose
    ensembles have their own members): the run's seed first, so one chain is the run itself."""
    from bayes_transfer.inference.methods import METHODS

    if chains < 1:
        raise ValueError(f"train.chains must be >= 1, got {chains}")
    return [seed + 100_003 * c for c in range(chains if METHODS[method].bayesian else 1)]


def average_chains(chains: list[FitResult]) -> FitResult:
    """One Bayesian model average over independent chains: the mean of their BMAs (each chain keeps as many
    samples, so every sample has the same weight). A failed chain fails the run; one chain is returned as is."""
    if len(chains) == 1:
        return chains[0]
    failed = [(i, c) for i, c in enumerate(chains) if not c.success]
    if failed:
        i, c = failed[0]
        return FitResult({}, False, f"chain {i} of {len(chains)}: {c.reason}", steps_run=c.steps_run,
                         wall_time_s=sum(r.wall_time_s for r in chains), history=c.history)
    probs = {k: torch.stack([c.probs[k] for c in chains]).mean(0) for k in chains[0].probs}
    energies = [c.prior_energy for c in chains]
    quads = [c.prior_quadratic for c in chains]
    entropies = {k: torch.stack([c.expected_entropy[k] for c in chains]).mean(0)
                 for k in chains[0].expected_entropy}
    return FitResult(probs, True, "", num_samples=sum(c.num_samples for c in chains), expected_entropy=entropies,
                     steps_run=sum(c.steps_run for c in chains), wall_time_s=sum(c.wall_time_s for c in chains),
                     history=chains[0].history,
                     prior_energy=None if None in energies else sum(energies) / len(energies),
                     prior_quadratic=None if None in quads else sum(quads) / len(quads))


def fit_stage(method: str, n: int, pretraining: str, seeds: list[int], *, checkpoint: str,
              prior_path: str | None, tuning_path: str | None, data_cfg: Mapping, model_cfg: Mapping,
              train_cfg: Mapping, outs: list[str], overrides: Mapping | None = None,
              device: str | None = None, checkpoint_every: int = 0, score_ood: bool = True,
              prune: bool = True) -> list[dict]:
    """Fit ``method`` with the selected values on n examples for each seed; one result file per run.

    Each run predicts on the task's evaluation sets; on its OOD sets (``score_ood``, the default; the ablations skip
    them) the record has the OOD-detection scores against the test set (:func:`bayes_transfer.results.ood.ood_scores`)
    instead of classification metrics. ``prune`` (the default; the ablations skip it): a variational method's record
    has the SNR-pruning curve of its fitted posterior on the test set (``pruning``, rows of
    :func:`~bayes_transfer.stages.pruning.posterior_pruning_curve`); the posterior itself is not kept.

    ``checkpoint_every > 0``: the fits are resumable (states ``<out>.fit<k>.ckpt``, see
    :func:`~bayes_transfer.inference.state.resumable`): a rerun after a kill continues from the last state and ends
    with the same numbers; the states are removed once every output is written.

    ``overrides`` (e.g. ``{"prior_rank": 5}`` in the rank ablation) replace config and selected values alike.

    ``train.chains`` > 1: a Bayesian method runs that many independent chains (:func:`chain_seeds`) averaged
    into one Bayesian model average (:func:`average_chains`; the paper's 5); tuning fits run one chain.
    """
    if len(outs) != len(seeds):
        raise ValueError("one output path per seed is needed")
    task = load_task(data_cfg)
    dev = get_device(device)
    state = load_pretrained(checkpoint)["state_dict"]
    prior = GaussianPrior.load(prior_path) if prior_path else None
    selected, tuning_ok, tuning_reason = {}, True, ""
    if tuning_path:
        tuning = json.loads(Path(tuning_path).read_text())
        tuning_ok, tuning_reason = tuning["success"], tuning.get("reason", "")
        selected = tuning["selected"] or {}
    overrides = dict(overrides or {})
    hp = Hyper.from_dict(dict(train_cfg) | selected | overrides)
    eval_sets = {k: ds for k, ds in task.eval_sets().items() if score_ood or k not in task.ood}
    labels = {k: _labels_tensor(task, ds) for k, ds in eval_sets.items()}
    keep_posterior = prune and METHODS[method].variational and "test" in eval_sets
    results = []
    for seed, out in zip(seeds, outs):
        t0 = time.perf_counter()
        train = training_subset(task, n, seed)
        if tuning_ok:
            with resumable(out, checkpoint_every):
                chains = [run_method(method, arch=model_cfg["arch"], pretrained_state=state,
                                     num_classes=task.num_classes, train_set=train, eval_sets=eval_sets, hp=hp,
                                     seed=s, learned_prior=prior, device=dev, arch_kwargs=model_cfg.get("kwargs"),
                                     keep_posterior=keep_posterior)
                          for s in chain_seeds(method, seed, hp.chains)]
            res = average_chains(chains)
            posterior, res.posterior = res.posterior, None
            success, reason = res.success, res.reason
        else:
            res, success, reason = None, False, f"tuning failed: {tuning_reason}"
        record = {
            "method": method, "pretraining": pretraining, "dataset": task.name, "arch": model_cfg["arch"],
            "n_train": n, "seed": seed, "hyper": hp.to_dict(), "selected": selected, "overrides": overrides,
            "success": success,
            "reason": reason, "code_version": code_version(), "wall_time_s": time.perf_counter() - t0,
            "metrics": {}, "diagnostics": res.diagnostics() if res else {},
        }
        if success:
            for k, p in res.probs.items():
                if k in task.ood:  # OOD detection against the test set (bayes_transfer.results.ood)
                    ee = res.expected_entropy
                    record["metrics"][k] = ood.ood_scores(res.probs["test"], p, ee.get("test"), ee.get(k),
                                                          res.num_samples)
                    continue
                m = metrics.classification_metrics(p, labels[k], task.num_classes)
                m["reliability"] = metrics.reliability_table(p, labels[k])
                record["metrics"][k] = m
        if success and keep_posterior and posterior is not None:
            net = build_model(model_cfg["arch"], task.num_classes, **(model_cfg.get("kwargs") or {}))
            record["pruning"] = posterior_pruning_curve(posterior, net.to(dev), train, eval_sets["test"])
        # integrity (bayes_transfer.integrity): the checksums of what this result was computed from
        record["inputs"] = input_checksums({"data": data_cfg, "model": model_cfg, "train": train_cfg,
                                            "overrides": overrides}, checkpoint=checkpoint, prior=prior_path,
                                           tuning=tuning_path)
        write_json(out, record)
        results.append(record)
        log.info("fit %s n=%d seed=%d success=%s %s", method, n, seed, success,
                 {k: round(v["accuracy"], 4) for k, v in record["metrics"].items() if "accuracy" in v})
    for out in outs:
        remove_checkpoints(out)
    return results
