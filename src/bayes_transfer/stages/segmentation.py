"""The segmentation stage of the workflow (Tables 1, 15, 16): runs -> one tidy table -> the three tables.

:func:`segmentation_stage` runs one table cell (dataset x backbone x pretraining x method) for every seed
and writes one JSON result per run; :func:`tidy_segmentation_runs` merges them into
``results/tables/segmentation_runs.csv`` (one row per run, metric ``miou``, value a fraction in [0, 1];
a failed run keeps its row with ``success = False``, its reason and no value); :func:`segmentation_tables`
lays the mean +/- standard error over successful seeds out like the paper's Tables 1, 15 and 16. Nothing
here imports Snakemake.

Seeds: the training and evaluation data are the same for every seed (as in the paper, which repeats each
run 5 times on the full training set); a seed sets the decoder's initialisation, the batch order, the
augmentation and the sampler's noise.

Which checkpoint: the methods without a learned prior (``sgd_transfer``, ``bnn_isotropic_prior``) start
from the supervised checkpoint (the paper's torchvision initialisation); the learned-prior methods start
from the checkpoint their prior was learned from (SimCLR prior -> SimCLR weights), so the prior is centred
where the run starts.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from torch.utils.data import Dataset

from bayes_transfer.device import get_device
from bayes_transfer.integrity import input_checksums
from bayes_transfer.io import write_json
from bayes_transfer.stages.experiment import code_version
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.inference.segmentation import SEGMENTATION_METHODS, SegmentationHyper, fit_segmentation
from bayes_transfer.inference.state import Checkpointing, remove_checkpoints, state_path
from bayes_transfer.models.deeplab import (ModelSpec, build_segmentation_model, load_pretrained_backbone,
                                           read_backbone_checkpoint)

log = logging.getLogger("bayes_transfer.stages.segmentation")

DATASET_LABELS = {"digit_scenes": "digit scenes", "voc2012": "PASCAL VOC 2012", "cityscapes": "Cityscapes"}
BACKBONE_LABELS = {"resnet50": "ResNet-50", "resnet101": "ResNet-101"}
#: the pretraining whose checkpoint initialises the methods without a learned prior
INIT_PRETRAINING = "supervised"


@dataclass
class SegmentationTask:
    name: str
    train: Dataset
    eval: Dataset
    eval_split: str
    num_classes: int
    class_names: tuple[str, ...]


def load_segmentation_task(dataset: str, dataset_cfg: Mapping, digits_cfg: Mapping | None = None) -> SegmentationTask:
    """The training and evaluation sets of ``dataset`` (``digit_scenes``, ``voc2012`` or ``cityscapes``)."""
    if dataset == "digit_scenes":
        from bayes_transfer.data.scenes import SceneConfig, load_digit_scenes

        digits_cfg = digits_cfg or {}
        scene_keys = set(SceneConfig.__dataclass_fields__)
        t = load_digit_scenes(SceneConfig(**{k: v for k, v in dataset_cfg.items() if k in scene_keys}),
                              split_seed=digits_cfg.get("split_seed", 0), n_test_digits=digits_cfg.get("n_test", 300),
                              n_val_digits=digits_cfg.get("n_val", 150))
        return SegmentationTask(dataset, t.train, t.test, "test", t.num_classes, t.class_names)
    from bayes_transfer.data import segmentation_paper as sp

    kw = dict(crop_size=dataset_cfg.get("crop_size", 513), scale_range=dataset_cfg.get("scale_range", (0.5, 2.0)))
    train = sp.load_segmentation_dataset(dataset, dataset_cfg["root"], "train", train_transform=True,
                                         sbd_root=dataset_cfg.get("sbd_root"), **kw)
    val = sp.load_segmentation_dataset(dataset, dataset_cfg["root"], "val", train_transform=False, **kw)
    names = sp.VOC_CLASSES if dataset == "voc2012" else sp.CITYSCAPES_CLASSES
    return SegmentationTask(dataset, train, val, "val", sp.NUM_CLASSES[dataset], names)


def model_spec(backbone_model: Mapping, model_cfg: Mapping, num_classes: int) -> ModelSpec:
    return ModelSpec(arch=backbone_model["arch"], num_classes=num_classes,
                     arch_kwargs=dict(backbone_model.get("kwargs") or {}),
                     output_stride=int(model_cfg.get("output_stride", 16)),
                     atrous_rates=tuple(int(r) for r in model_cfg.get("atrous_rates", (6, 12, 18))),
                     decoder_channels=int(model_cfg.get("decoder_channels", 256)),
                     aspp_separable=bool(model_cfg.get("aspp_separable", True)),
                     aspp_dropout=float(model_cfg.get("aspp_dropout", 0.5)))


def segmentation_stage(dataset: str, backbone: str, pretraining: str, method: str, seeds: list[int], *,
                       checkpoint: str, prior_path: str | None, dataset_cfg: Mapping, model_cfg: Mapping,
                       backbone_model: Mapping, train_cfg: Mapping, outs: list[str],
                       digits_cfg: Mapping | None = None, device: str | None = None,
                       checkpoint_every: int = 0) -> list[dict]:
    """Run one cell of Tables 1/15/16 for every seed; one JSON result per run (``outs``, one per seed).

    ``backbone`` is the paper's column (resnet50 / resnet101) the run fills, ``backbone_model`` the
    architecture actually used (``{"arch", "kwargs"}``; on the embedded default a small_resnet stand-in).
    ``checkpoint_every > 0`` (paper scale): each run's state is saved to ``<out>.fit0.ckpt`` every that many
    iterations and its result when it finishes, so a job resubmitted after a time limit skips finished seeds
    and continues the unfinished one with the same numbers (on the CPU) as an uninterrupted run; the state
    files are removed once every output is written.
    """
    if method not in SEGMENTATION_METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; known: {', '.join(SEGMENTATION_METHODS)}")
    if len(outs) != len(seeds):
        raise ValueError("one output path per seed is needed")
    learned = method in ("bnn_learned_prior", "sgd_learned_prior")
    if learned and not prior_path:
        raise ValueError(f"{method} needs a learned prior file")
    task = load_segmentation_task(dataset, dataset_cfg, digits_cfg)
    dev = get_device(device)
    state = read_backbone_checkpoint(checkpoint)
    prior = GaussianPrior.load(prior_path) if learned else None
    hp = SegmentationHyper.from_dict(dict(train_cfg) | {"lr": dataset_cfg["lr"]})
    spec = model_spec(backbone_model, model_cfg, task.num_classes)
    results = []
    import torch

    for seed, out in zip(seeds, outs):
        t0 = time.perf_counter()
        # what the fit cannot see of its inputs: the data, the network and the files
        key = {"dataset": dataset, "dataset_cfg": dict(dataset_cfg), "backbone_model": dict(backbone_model),
               "model": dict(model_cfg), "checkpoint": str(checkpoint), "prior": str(prior_path) if learned else None}
        resume = Checkpointing(state_path(out), checkpoint_every, key) if checkpoint_every > 0 else None
        torch.manual_seed(seed)
        model = build_segmentation_model(spec)
        loaded = load_pretrained_backbone(model, state)
        res = fit_segmentation(model, task.train, task.eval, method=method, hp=hp, num_classes=task.num_classes,
                               learned_prior=prior, seed=seed, device=dev, desc=f"{dataset}/{backbone}/{method}",
                               checkpoint=resume)
        record = {
            "task": "segmentation", "dataset": task.name, "backbone": backbone, "arch": spec.arch,
            "arch_kwargs": spec.arch_kwargs, "pretraining": pretraining, "method": method,
            "inference": hp.sampler if method.startswith("bnn_") else "sgd", "seed": seed,
            "n_train": len(task.train), "eval_set": task.eval_split, "num_classes": task.num_classes,
            "class_names": list(task.class_names), "checkpoint": str(checkpoint),
            "prior": str(prior_path) if learned else None, "backbone_keys_loaded": len(loaded),
            "model": {"output_stride": spec.effective_output_stride(), "atrous_rates": list(spec.atrous_rates),
                      "decoder_channels": spec.decoder_channels, "aspp_separable": spec.aspp_separable,
                      "aspp_dropout": spec.aspp_dropout},
            "hyper": hp.to_dict(), "success": res.success, "reason": res.reason,
            "metrics": {task.eval_split: res.metrics} if res.success else {},
            "diagnostics": res.diagnostics(), "history": res.history,
            "code_version": code_version(), "wall_time_s": time.perf_counter() - t0,
        }
        # integrity (bayes_transfer.integrity): the checksums of what this result was computed from
        record["inputs"] = input_checksums({"dataset": dataset_cfg, "model": model_cfg,
                                            "backbone_model": backbone_model, "train": train_cfg},
                                           checkpoint=checkpoint, prior=prior_path if learned else None)
        write_json(out, record)
        results.append(record)
        log.info("segment %s %s %s %s seed=%d success=%s miou=%s (%.1f s)", dataset, backbone, pretraining, method,
                 seed, res.success, round(res.metrics["miou"], 4) if res.success else None, record["wall_time_s"])
    for out in outs:
        remove_checkpoints(out)
    return results


# ------------------------------------------------------------------------------------------- tables
RUN_COLUMNS = ["dataset", "backbone", "arch", "pretraining", "method", "seed", "success", "reason", "metric",
               "value", "eval_set", "n_train", "inference", "wall_time_s", "path"]


def tidy_segmentation_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: metric ``miou`` (fraction in [0, 1]); failed runs have value NaN and their reason.
    Runs of one (dataset, backbone, pretraining) computed from different checkpoint or prior files are refused
    (:func:`bayes_transfer.integrity.check_consistent_inputs`)."""
    from bayes_transfer.integrity import check_consistent_inputs
    from bayes_transfer.results.aggregate import read_result

    rows, records = [], []
    for path in paths:
        rec = read_result(path, ("dataset", "backbone", "arch", "pretraining", "method", "seed", "success"),
                          "segmentation")
        records.append((path, rec))
        value = float("nan")
        if rec["success"]:
            value = float(rec["metrics"][rec["eval_set"]]["miou"])
        rows.append({"dataset": rec["dataset"], "backbone": rec["backbone"], "arch": rec["arch"],
                     "pretraining": rec["pretraining"], "method": rec["method"], "seed": rec["seed"],
                     "success": bool(rec["success"]), "reason": rec.get("reason", ""), "metric": "miou",
                     "value": value, "eval_set": rec.get("eval_set"), "n_train": rec.get("n_train"),
                     "inference": rec.get("inference"), "wall_time_s": rec.get("wall_time_s"), "path": str(path)})
    check_consistent_inputs(records, key=("dataset", "backbone", "pretraining"))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def cell(tidy: pd.DataFrame, dataset: str, backbone: str, pretraining: str, method: str) -> str:
    """``mean ± SE`` of mean IoU (%) over the successful seeds of one cell; failures are never averaged in."""
    rows = tidy[(tidy["dataset"] == dataset) & (tidy["backbone"] == backbone) & (tidy["pretraining"] == pretraining)
                & (tidy["method"] == method) & (tidy["metric"] == "miou")]
    if rows.empty:
        return "not run"
    ok = rows[rows["success"]]["value"].to_numpy(dtype=float)
    n_failed = int((~rows["success"]).sum())
    if ok.size == 0:
        return f"failed ({n_failed}/{len(rows)})"
    text = f"{100 * ok.mean():.2f}"
    if ok.size > 1:
        text += f" ± {100 * ok.std(ddof=1) / math.sqrt(ok.size):.2f}"
    if n_failed:
        text += f" ({n_failed} failed)"
    return text


def _row_label(tidy: pd.DataFrame, dataset: str, backbone: str | None = None) -> str:
    label = DATASET_LABELS.get(dataset, dataset)
    if backbone is None:
        return label
    arch = tidy[(tidy["dataset"] == dataset) & (tidy["backbone"] == backbone)]["arch"].unique()
    name = BACKBONE_LABELS.get(backbone, backbone)
    if len(arch) and arch[0] != backbone:
        name += f" (stand-in: {arch[0]})"
    return f"{label}, {name}"


NOT_CONFIGURED = "not run (not in segmentation.backbones)"


def segmentation_tables(tidy: pd.DataFrame, datasets: list[str], backbones: Iterable[str] = ("resnet50", "resnet101")
                        ) -> dict[str, pd.DataFrame]:
    """Tables 1, 15 and 16 (keys ``table1``, ``table15``, ``table16``) as DataFrames of formatted cells.

    Cells of a paper backbone column that is not in ``backbones`` read :data:`NOT_CONFIGURED`; configured cells
    without runs read "not run"; the ResNet-101 SSL cell of Table 1 is the paper's "*".
    """
    sup, ssl = "supervised", "simclr"
    backbones = set(backbones)

    def cell_or_note(d, b, p, m):
        return cell(tidy, d, b, p, m) if b in backbones else NOT_CONFIGURED

    t1_cols = {"SGD Transfer": (sup, "sgd_transfer"), "Non-Learned Prior (SGLD)": (sup, "bnn_isotropic_prior"),
               "Learned Prior Supervised (SGLD)": (sup, "bnn_learned_prior"),
               "Learned Prior SSL (SGLD)": (ssl, "bnn_learned_prior")}
    rows = {}
    for d in datasets:
        for b in ("resnet50", "resnet101"):
            row = {}
            for col, (p, m) in t1_cols.items():
                row[col] = cell_or_note(d, b, p, m)
                if b == "resnet101" and p == ssl and row[col] in ("not run", NOT_CONFIGURED):
                    row[col] = "* (no SimCLR ResNet-101)"
            rows[_row_label(tidy, d, b)] = row
    table1 = pd.DataFrame.from_dict(rows, orient="index")
    table1.index.name = "Dataset, backbone"

    def map_table(backbone: str, cols: dict) -> pd.DataFrame:
        t = pd.DataFrame.from_dict({_row_label(tidy, d): {c: cell_or_note(d, backbone, p, m)
                                                          for c, (p, m) in cols.items()}
                                    for d in datasets}, orient="index")
        t.index.name = "Dataset"
        return t

    table15 = map_table("resnet50", {"Non-Learned Prior MAP": (sup, "sgd_transfer"),
                                     "Supervised Prior MAP": (sup, "sgd_learned_prior"),
                                     "SSL Prior MAP": (ssl, "sgd_learned_prior")})
    table16 = map_table("resnet101", {"Non-Learned Prior MAP": (sup, "sgd_transfer"),
                                      "Supervised Prior MAP": (sup, "sgd_learned_prior")})
    return {"table1": table1, "table15": table15, "table16": table16}


CAPTIONS = {
    "table1": ("Table 1: Bayesian inference for semantic segmentation. Mean IoU (%) on the evaluation split, "
               "mean ± standard error over seeds, of DeepLabv3+ trained with SGD (weight decay) or SG-MCMC "
               "(the paper's SGLD with momentum) under a non-learned zero-mean isotropic prior or a learned "
               "(SWAG, supervised or SimCLR) prior over the backbone; ASPP and decoder get a zero-mean "
               "isotropic prior in every method. * SimCLR ResNet-101 checkpoints were not released."),
    "table15": ("Table 15: MAP estimation for semantic segmentation (ResNet-50 backbone). Mean IoU (%), mean ± "
                "standard error over seeds, of SGD with the learned supervised / SSL prior over the backbone "
                "versus the non-learned prior (weight decay)."),
    "table16": ("Table 16: MAP estimation for semantic segmentation (ResNet-101 backbone). Mean IoU (%), mean ± "
                "standard error over seeds, of SGD with the learned supervised prior over the backbone versus "
                "the non-learned prior (weight decay)."),
}


def table_note(tidy: pd.DataFrame) -> str:
    """What the rows actually ran on (stand-in backbones, number of seeds, failures)."""
    if tidy.empty:
        return "No segmentation runs."
    n_seeds = tidy.groupby(["dataset", "backbone", "pretraining", "method"])["seed"].nunique()
    failed = int((~tidy["success"]).sum())
    archs = sorted({f"{b} -> {a}" for b, a in zip(tidy["backbone"], tidy["arch"]) if a != b})
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}-{n_seeds.max()}"
    note = f"Seeds per cell: {seeds}; failed runs: {failed} (never averaged in)."
    if archs:
        note += (" Embedded-default stand-ins (paper column -> architecture run): " + ", ".join(archs) + "; "
                 "numbers are on the digit-scene task and are not comparable to the paper's values.")
    return note
