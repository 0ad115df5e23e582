"""The stages of the paper's protocol as functions of explicit config slices (called by the workflow).

Each stage reads plain dicts (the slices of ``config.yaml`` a Snakemake rule passes through ``params``),
writes its own files atomically and returns what it wrote. Nothing here imports Snakemake.

Stages: :func:`pretrain_stage` -> :func:`prior_stage` -> :func:`tune_stage` -> :func:`fit_stage`.

Tuning protocol (the paper's, with honest data sizes): for training size n, a class-balanced subsample of
n examples (tuning seed) is split into a training part and a held-out validation part
(``holdout_fraction``, at least one example per class when possible); every grid point is fitted on the
training part and scored on the held-out part; the best values are then used to retrain on all n examples
(train + validation) for each evaluation seed.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from bayes_transfer import __version__

from bayes_transfer.results import metrics
from bayes_transfer.data.subsample import balanced_subsample
from bayes_transfer.device import get_device
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.inference.methods import run_method
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.inference.loop import Hyper, remove_checkpoints, resumable

log = logging.getLogger("bayes_transfer.stages.experiment")


# ---------------------------------------------------------------------------------------------- files
def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically: a killed job never leaves a half-written result that counts as done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def code_version() -> str:
    """Library version plus the git commit of the working tree (``+dirty`` if modified)."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Task:
    """Source and downstream data of one configured dataset."""

    name: str
    source_train: Dataset
    pool: Dataset
    test: Dataset
    shifted_test: Dataset | None
    num_classes: int
    source_classes: int
    metric: str = "accuracy"
    augment: Any = None

    def labels(self, ds: Dataset) -> np.ndarray:
        if isinstance(ds, TensorDataset):
            return ds.tensors[1].numpy()
        if isinstance(ds, Subset):
            return self.labels(ds.dataset)[np.asarray(ds.indices)]
        from bayes_transfer.data.paper import labels_of

        return labels_of(ds)

    def eval_sets(self) -> dict[str, Dataset]:
        out = {"test": self.test}
        if self.shifted_test is not None:
            out["shifted_test"] = self.shifted_test
        return out


def load_task(data_cfg: Mapping) -> Task:
    """The datasets of ``data_cfg`` (the ``data`` section of the config)."""
    name = data_cfg["dataset"]
    if name == "digits":
        from bayes_transfer.data.digits import augment, load_digits_tasks

        d = load_digits_tasks(split_seed=data_cfg.get("split_seed", 0), n_test=data_cfg.get("n_test", 300),
                              n_val=data_cfg.get("n_val", 150), shift_strength=data_cfg.get("shift_strength", 1.0))
        # the digits' own validation split joins the pool: validation sets are held out of each
        # training subsample (see the module docstring)
        pool = TensorDataset(torch.cat([d.pool.tensors[0], d.val.tensors[0]]),
                             torch.cat([d.pool.tensors[1], d.val.tensors[1]]))
        return Task("digits", d.source_train, pool, d.test, d.shifted_test, d.num_classes, d.num_classes,
                    "accuracy", augment)
    from bayes_transfer.data import paper

    root = data_cfg.get("root", "data")
    size = data_cfg.get("image_size", 224)
    pool = paper.load_pool(name, root, image_size=size)  # Flowers-102: train + val
    test = paper.load_paper_dataset(name, root, "test", image_size=size, train_transform=False)
    shifted = (paper.load_cifar101(Path(root) / "cifar10.1", image_size=size)
               if data_cfg.get("shifted_test") == "cifar10.1" else None)
    # the source task (ImageNet) is read only by SWAG (prior_stage), see source_train_set
    return Task(name, None, pool, test, shifted, paper.NUM_CLASSES[name], 1000, paper.PAPER_METRIC[name],
                paper.simclr_augment)


def source_train_set(task: Task, data_cfg: Mapping) -> Dataset:
    """The source task's training set: the digits' source split, or ImageNet's at paper scale."""
    if task.source_train is not None:
        return task.source_train
    from bayes_transfer.data import paper

    return paper.load_imagenet_train(data_cfg.get("root", "data"), data_cfg.get("image_size", 224))


def training_subset(task: Task, n: int, seed: int) -> Dataset:
    """The class-balanced subsample of size ``n`` of the downstream pool for ``seed``."""
    labels = task.labels(task.pool)
    if n > len(labels):
        raise ValueError(f"training size {n} is larger than the downstream pool ({len(labels)} examples)")
    idx = balanced_subsample(labels, n, seed)
    return _take(task.pool, idx)


def _take(ds: Dataset, idx: np.ndarray) -> Dataset:
    if isinstance(ds, TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return TensorDataset(*(x[t] for x in ds.tensors))
    return Subset(ds, [int(i) for i in idx])


def holdout_split(task: Task, subset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a training subsample into (train part, held-out validation part), class-balanced."""
    labels = task.labels(subset)
    n = len(labels)
    classes = len(np.unique(labels))
    n_val = max(int(round(fraction * n)), min(n // 2, classes))
    n_val = min(max(n_val, 1), n - 1)
    val_idx = balanced_subsample(labels, n_val, seed + 1)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return _take(subset, train_idx), _take(subset, val_idx)


# ---------------------------------------------------------------------------------------------- stages
def pretrain_stage(pretraining: str, data_cfg: Mapping, model_cfg: Mapping, pretrain_cfg: Mapping, out: str,
                   seed: int = 0, device: str | None = None, checkpoint_every: int = 0) -> dict:
    """Train the source checkpoint (embedded default) and save model + source objective.

    ``checkpoint_every > 0``: the training state is saved to ``<out>.ckpt`` periodically, a rerun after a
    kill continues from it, and it is removed once ``out`` is written.
    """
    task = load_task(data_cfg)
    dev = get_device(device)
    t0 = time.perf_counter()
    model, objective, history = pretrain(model_cfg["arch"], pretraining, source_train_set(task, data_cfg),
                                         task.source_classes, PretrainConfig(**pretrain_cfg), augment=task.augment,
                                         seed=seed, device=dev, arch_kwargs=model_cfg.get("kwargs"),
                                         checkpoint_path=f"{out}.ckpt", checkpoint_every=checkpoint_every)
    meta = {"arch": model_cfg["arch"], "pretraining": pretraining, "source_task": f"{task.name} source",
            "history": history, "wall_time_s": time.perf_counter() - t0, "code_version": code_version()}
    save_torch({"state_dict": model.cpu().state_dict(), "objective": objective.cpu().state_dict(),
                "metadata": meta}, out)
    Path(f"{out}.ckpt").unlink(missing_ok=True)
    return meta


def convert_stage(pretraining: str, weights_manifest: str, model_cfg: Mapping, out: str, seed: int = 0) -> dict:
    """Paper scale: the fetched ImageNet checkpoint in the format :func:`pretrain_stage` writes.

    ``weights_manifest`` is the JSON of rule fetch_weights (:func:`~bayes_transfer.models.checkpoints.
    fetch_source_weights`). The supervised checkpoint keeps its 1000-class ``fc`` (the source head SWAG
    fine-tunes with); SimCLR checkpoints have no classifier, and the projection head of the SimCLR source
    loss is freshly initialised (seeded), as the converted checkpoints do not include it.
    """
    from bayes_transfer.models.checkpoints import load_source_weights
    from bayes_transfer.data.paper import simclr_augment
    from bayes_transfer.models.resnets import build_model, load_backbone_state
    from bayes_transfer.objectives.pretrain import SourceObjective

    manifest = json.loads(Path(weights_manifest).read_text())
    arch = model_cfg["arch"]
    if manifest.get("pretraining") != pretraining:
        raise ValueError(f"{weights_manifest} is for pre-training {manifest.get('pretraining')!r}, "
                         f"not {pretraining!r}")
    state = load_source_weights(manifest, arch)
    torch.manual_seed(seed)
    model = build_model(arch, 1000, **(model_cfg.get("kwargs") or {}))
    load_backbone_state(model, state)
    if pretraining == "supervised":
        if "fc.weight" not in state:
            raise ValueError(f"{manifest['path']}: a supervised checkpoint needs its ImageNet classifier fc.*")
        model.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    objective = SourceObjective(pretraining, model.feature_dim, augment=simclr_augment, seed=seed)
    meta = {"arch": arch, "pretraining": pretraining, "source_task": "imagenet", "weights": manifest,
            "code_version": code_version()}
    save_torch({"state_dict": model.state_dict(), "objective": objective.state_dict(), "metadata": meta}, out)
    return meta


def load_pretrained(path: str) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: expected a pre-trained checkpoint with a 'state_dict' entry")
    return ckpt


def prior_stage(pretraining: str, checkpoint: str, data_cfg: Mapping, model_cfg: Mapping, swag_cfg: Mapping,
                out: str, seed: int = 0, device: str | None = None, checkpoint_every: int = 0) -> GaussianPrior:
    """Learn the SWAG prior from a checkpoint on its own source loss; the prior file is reusable.

    At paper scale the source task is ImageNet's training set (:func:`source_train_set`).
    ``checkpoint_every > 0``: the SWAG state is saved to ``<out>.ckpt`` periodically, a rerun after a kill
    continues from it, and it is removed once ``out`` is written.
    """
    from bayes_transfer.models.resnets import build_model
    from bayes_transfer.objectives.pretrain import SourceObjective

    task = load_task(data_cfg)
    dev = get_device(device)
    ckpt = load_pretrained(checkpoint)
    model = build_model(model_cfg["arch"], task.source_classes, **(model_cfg.get("kwargs") or {}))
    model.load_state_dict(ckpt["state_dict"])
    objective = SourceObjective(pretraining, model.feature_dim, augment=task.augment, seed=seed)
    objective.load_state_dict(ckpt["objective"])
    source = "imagenet" if task.source_train is None else f"{task.name} source"
    prior = learn_prior(model, objective, source_train_set(task, data_cfg), SWAGConfig(**swag_cfg), seed=seed,
                        device=dev, metadata={"arch": model_cfg["arch"], "pretraining": pretraining,
                                              "source_task": source, "checkpoint": str(checkpoint),
                                              "code_version": code_version()},
                        checkpoint_path=f"{out}.ckpt", checkpoint_every=checkpoint_every)
    prior.save(out)
    Path(f"{out}.ckpt").unlink(missing_ok=True)
    return prior


def import_prior_stage(pretraining: str, checkpoint: str, prefix: str, model_cfg: Mapping, out: str) -> GaussianPrior:
    """Paper scale: the authors' released prior (priorBox files ``<prefix>_*.pt``) as this library's prior file.

    The imported prior is checked against the backbone of the pre-trained ``checkpoint`` (same parameter
    names and shapes) so a prior of another architecture fails here, not in the first training job.
    """
    from bayes_transfer.models.resnets import build_model, load_backbone_state, split_named_parameters

    files = [Path(f"{prefix}_{k}.pt") for k in ("mean", "variance", "covmat", "model")]
    missing = [p for p in files if not p.is_file()]
    if missing:
        listing = "\n".join(f"  {'MISSING' if p in missing else 'found  '} {p}" for p in files)
        raise FileNotFoundError(
            f"released prior for {model_cfg['arch']} {pretraining} not found (prior.priorbox_prefix):\n{listing}\n"
            "To obtain it: download the priors released with the paper (github.com/hsouri/BayesianTransferLearning, "
            "'priors' links in its README) and place the four files at these paths, or learn the prior here with "
            "prior.source: swag (needs ImageNet's training set)."
        )
    prior = GaussianPrior.from_priorbox(prefix, metadata={
        "arch": model_cfg["arch"], "pretraining": pretraining, "source_task": "imagenet",
        "checkpoint": str(checkpoint), "code_version": code_version()})
    model = build_model(model_cfg["arch"], 1000, **(model_cfg.get("kwargs") or {}))
    load_backbone_state(model, load_pretrained(checkpoint)["state_dict"])
    backbone, _ = split_named_parameters(model)
    prior.check_params(backbone)
    prior.save(out)
    return prior


def _score(task: Task, probs: torch.Tensor, labels: torch.Tensor, metric: str) -> float:
    if metric == "nll":
        return -metrics.nll(probs, labels)
    if metric == "mean_per_class_accuracy":
        return metrics.mean_per_class_accuracy(probs, labels, task.num_classes)
    return metrics.accuracy(probs, labels)


def _labels_tensor(task: Task, ds: Dataset) -> torch.Tensor:
    return torch.as_tensor(task.labels(ds), dtype=torch.long)


def grid_points(grid: Mapping[str, list]) -> list[dict]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]


def tune_stage(method: str, sizes: list[int], pretraining: str, *, checkpoint: str, prior_path: str | None,
               data_cfg: Mapping, model_cfg: Mapping, train_cfg: Mapping, grid: Mapping[str, list],
               tuning_cfg: Mapping, outs: list[str], device: str | None = None,
               checkpoint_every: int = 0) -> list[dict]:
    """For each size: fit every grid point on the training part of a tuning subsample, score it on the
    held-out part, and write the selection (with every grid point's score) to the size's file.

    ``checkpoint_every > 0``: every fit is resumable (states ``<out>.point<i>.fit<k>.ckpt``, see
    :func:`~bayes_transfer.inference.loop.resumable`, one prefix per grid point); a rerun after a kill skips finished
    grid points and continues
    the interrupted one. The states are removed once every output is written."""
    if len(outs) != len(sizes):
        raise ValueError("one output path per training size is needed")
    task = load_task(data_cfg)
    dev = get_device(device)
    seed = int(tuning_cfg.get("seed", 1000))
    metric = tuning_cfg.get("metric") or task.metric
    state = load_pretrained(checkpoint)["state_dict"]
    prior = GaussianPrior.load(prior_path) if prior_path else None
    results = []
    for n, out in zip(sizes, outs):
        subset = training_subset(task, n, seed)
        train, val = holdout_split(task, subset, float(tuning_cfg.get("holdout_fraction", 0.3)), seed)
        val_labels = _labels_tensor(task, val)
        rows, t0 = [], time.perf_counter()
        for i, point in enumerate(grid_points(grid)):
            hp = Hyper.from_dict(dict(train_cfg) | point)
            with resumable(f"{out}.point{i}", checkpoint_every):
                res = run_method(method, arch=model_cfg["arch"], pretrained_state=state,
                                 num_classes=task.num_classes, train_set=train, eval_sets={"val": val}, hp=hp,
                                 seed=seed, learned_prior=prior, device=dev, arch_kwargs=model_cfg.get("kwargs"))
            score = _score(task, res.probs["val"], val_labels, metric) if res.success else float("nan")
            rows.append({"values": point, "score": score, "success": res.success, "reason": res.reason})
            log.info("tune %s n=%d %s -> %s %.4f %s", method, n, point, metric, score, res.reason)
        ok = [r for r in rows if r["success"] and math.isfinite(r["score"])]
        best = max(ok, key=lambda r: r["score"]) if ok else None
        result = {
            "method": method, "pretraining": pretraining, "n_train": n, "metric": metric, "tuning_seed": seed,
            "n_tune_train": len(train), "n_tune_val": len(val), "grid": rows,
            "selected": best["values"] if best else None, "success": best is not None,
            "reason": "" if best else "every grid point failed", "wall_time_s": time.perf_counter() - t0,
            "code_version": code_version(),
        }
        write_json(out, result)
        results.append(result)
    for out in outs:
        remove_checkpoints(out)
    return results


def fit_stage(method: str, n: int, pretraining: str, seeds: list[int], *, checkpoint: str,
              prior_path: str | None, tuning_path: str | None, data_cfg: Mapping, model_cfg: Mapping,
              train_cfg: Mapping, outs: list[str], overrides: Mapping | None = None,
              device: str | None = None, checkpoint_every: int = 0) -> list[dict]:
    """Fit ``method`` with the selected values on n examples for each seed; one result file per run.

    ``checkpoint_every > 0``: the fits are resumable (states ``<out>.fit<k>.ckpt``, see
    :func:`~bayes_transfer.inference.loop.resumable`): a rerun after a kill continues from the last state and ends
    with the same numbers; the states are removed once every output is written.

    ``overrides`` (e.g. ``{"prior_rank": 5}`` in the rank ablation) replace config and selected values alike.
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
    eval_sets = task.eval_sets()
    labels = {k: _labels_tensor(task, ds) for k, ds in eval_sets.items()}
    results = []
    for seed, out in zip(seeds, outs):
        t0 = time.perf_counter()
        train = training_subset(task, n, seed)
        if tuning_ok:
            with resumable(out, checkpoint_every):
                res = run_method(method, arch=model_cfg["arch"], pretrained_state=state,
                                 num_classes=task.num_classes, train_set=train, eval_sets=eval_sets, hp=hp,
                                 seed=seed, learned_prior=prior, device=dev, arch_kwargs=model_cfg.get("kwargs"))
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
                m = metrics.classification_metrics(p, labels[k], task.num_classes)
                m["reliability"] = metrics.reliability_bins(p, labels[k]).to_dict(orient="list")
                record["metrics"][k] = m
        write_json(out, record)
        results.append(record)
        log.info("fit %s n=%d seed=%d success=%s %s", method, n, seed, success,
                 {k: round(v["accuracy"], 4) for k, v in record["metrics"].items()})
    for out in outs:
        remove_checkpoints(out)
    return results
