"""The source side of the protocol: the pre-trained checkpoint and the prior learned from it (or imported).

:func:`pretrain_stage` trains the source checkpoint (embedded default; supervised, SimCLR or BYOL),
:func:`convert_stage` turns a fetched ImageNet checkpoint into the same format (paper scale), :func:`prior_stage`
learns the prior on the checkpoint's own source loss (SWAG, or Bayes by Backprop: BYOV, issue 14) and :func:`import_prior_stage` imports the authors' released prior instead. Each
reads plain config slices, writes its file atomically and returns what it wrote; the downstream stages are
:mod:`bayes_transfer.stages.experiment`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import torch

from bayes_transfer.device import get_device
from bayes_transfer.integrity import load_torch_file, stamp
from bayes_transfer.io import save_torch
from bayes_transfer.objectives.pretrain import PretrainConfig, pretrain
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.priors.learning import SWAGConfig, learn_prior
from bayes_transfer.priors.bbb import BBBConfig, learn_bbb_prior
from bayes_transfer.stages.job import code_version
from bayes_transfer.stages.task import load_task, source_train_set

#: how a prior is learned from a checkpoint (``prior.method``, ``prior.variants[].method``)
PRIOR_METHODS = ("swag", "bbb")

__all__ = ["PRIOR_METHODS", "pretrain_stage", "convert_stage", "load_pretrained", "prior_stage", "warn_if_drift_dominated",
           "import_prior_stage"]

log = logging.getLogger("bayes_transfer.stages.source")


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
    save_torch(stamp({"state_dict": model.cpu().state_dict(), "objective": objective.cpu().state_dict(),
                      "metadata": meta}), out)
    Path(f"{out}.ckpt").unlink(missing_ok=True)
    return meta


def convert_stage(pretraining: str, weights_manifest: str, model_cfg: Mapping, out: str, seed: int = 0) -> dict:
    """Paper scale: the fetched ImageNet checkpoint in the format :func:`pretrain_stage` writes.

    ``weights_manifest`` is the JSON of rule fetch_weights (:func:`~bayes_transfer.models.checkpoints.
    fetch_source_weights`). The supervised checkpoint keeps its 1000-class ``fc`` (the source head SWAG
    fine-tunes with); SimCLR checkpoints have no classifier, and the projection head of the SimCLR source
    loss is freshly initialised (seeded), as the converted checkpoints do not include it.
    """
    from bayes_transfer.data.transforms import simclr_augment
    from bayes_transfer.models.checkpoints import load_source_weights
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
    save_torch(stamp({"state_dict": model.state_dict(), "objective": objective.state_dict(), "metadata": meta}), out)
    return meta


def load_pretrained(path: str) -> dict:
    """A checkpoint written by :func:`pretrain_stage` or :func:`convert_stage` (integrity-checked)."""
    ckpt = load_torch_file(path, "pre-trained checkpoint")  # a damaged file: an error naming it
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: expected a pre-trained checkpoint with a 'state_dict' entry")
    return ckpt


def prior_stage(pretraining: str, checkpoint: str, data_cfg: Mapping, model_cfg: Mapping, swag_cfg: Mapping,
                out: str, seed: int = 0, device: str | None = None, checkpoint_every: int = 0, *,
                method: str = "swag", bbb_cfg: Mapping | None = None) -> GaussianPrior:
    """Learn the prior from a checkpoint on its own source loss; the prior file is reusable.

    ``method``: ``swag`` (``swag_cfg``: :class:`~bayes_transfer.priors.learning.SWAGConfig`) or ``bbb`` (Bayes by
    Backprop, ``bbb_cfg``: :class:`~bayes_transfer.priors.bbb.BBBConfig`; a diagonal, rank-0 prior in the same
    file format, ``metadata["prior_method"] == "bbb"``; the supervised objective augments as ``swag.augment``
    says, and a run is not resumable: it costs seconds on the digits).

    At paper scale the source task is ImageNet's training set (:func:`source_train_set`), whose loader already
    crops and flips; on the digits the supervised objective gets the task's augmentation (``swag.augment``).
    The prior's stationarity diagnostic is in its metadata (``diagnostics``); a drift-dominated prior is
    logged as a WARNING naming ``out`` (:func:`warn_if_drift_dominated`).
    ``checkpoint_every > 0``: the SWAG state is saved to ``<out>.ckpt`` periodically, a rerun after a kill
    continues from it, and it is removed once ``out`` is written.
    """
    from bayes_transfer.models.resnets import build_model
    from bayes_transfer.objectives.pretrain import make_objective

    if method not in PRIOR_METHODS:
        raise ValueError(f"prior method must be one of {PRIOR_METHODS}, got {method!r}")
    task = load_task(data_cfg)
    dev = get_device(device)
    ckpt = load_pretrained(checkpoint)
    model = build_model(model_cfg["arch"], task.source_classes, **(model_cfg.get("kwargs") or {}))
    model.load_state_dict(ckpt["state_dict"])
    objective = make_objective(pretraining, model, augment=task.augment, seed=seed)
    objective.load_state_dict(ckpt["objective"])
    source = "imagenet" if task.source_train is None else f"{task.name} source"
    metadata = {"arch": model_cfg["arch"], "pretraining": pretraining, "source_task": source,
                "checkpoint": str(checkpoint), "code_version": code_version()}
    if method == "bbb":
        if pretraining == "supervised" and swag_cfg.get("augment", True) and task.source_train is not None:
            objective.supervised_augment = task.augment
        prior, history = learn_bbb_prior(model, objective, source_train_set(task, data_cfg),
                                         BBBConfig(**(bbb_cfg or {})), seed=seed, device=dev,
                                         metadata=metadata | {"source_augmented": objective.kind != "supervised"
                                                              or objective.supervised_augment is not None})
        prior.metadata["history"] = history
        prior.save(out)
        return prior
    prior = learn_prior(model, objective, source_train_set(task, data_cfg), SWAGConfig(**swag_cfg), seed=seed,
                        device=dev, metadata=metadata, checkpoint_path=f"{out}.ckpt",
                        checkpoint_every=checkpoint_every,
                        source_augment=task.augment if task.source_train is not None else None)
    prior.save(out)
    Path(f"{out}.ckpt").unlink(missing_ok=True)
    warn_if_drift_dominated(prior, out)
    return prior


def warn_if_drift_dominated(prior: GaussianPrior, path: str) -> bool:
    """Log the prior's stationarity diagnostic; a WARNING naming ``path`` when it is drift-dominated
    (the snapshots walked along a trend: the prior measures drift, not a posterior's spread). True then."""
    d = prior.metadata.get("diagnostics")
    if not d:
        return False
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"  # noqa: E731
    text = (f"trend share {fmt(d['trend_share'])} over {d['n']} snapshots (stationary ~{fmt(d['trend_share_stationary'])}"
            f", threshold {fmt(d['drift_threshold'])}), top-direction cosine with mean - checkpoint "
            f"{fmt(d['top_direction_cosine'])}, {100 * d['floor_share']:.1f} % of coordinates at the variance floor")
    if d["drift_dominated"]:
        # the job log's format has no level name: the word is in the message
        log.warning("WARNING: prior %s is drift-dominated: %s", path, text)
    else:
        log.info("prior %s: %s", path, text)
    return bool(d["drift_dominated"])


def import_prior_stage(pretraining: str, checkpoint: str, prefix: str, model_cfg: Mapping, out: str) -> GaussianPrior:
    """Paper scale: the authors' released prior (priorBox files ``<prefix>_*.pt``) as this library's prior file.

    The imported prior is checked against the backbone of the pre-trained ``checkpoint`` (same parameter
    names and shapes) so a prior of another architecture fails here, not in the first training job.
    """
    from bayes_transfer.models.resnets import build_model, load_backbone_state, split_named_parameters

    metadata = {"arch": model_cfg["arch"], "pretraining": pretraining, "source_task": "imagenet",
                "checkpoint": str(checkpoint), "code_version": code_version()}
    try:
        prior = GaussianPrior.from_priorbox(prefix, metadata=metadata)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"released prior for {model_cfg['arch']} {pretraining} not found (prior.priorbox_prefix): {err} Or learn "
            "the prior here with prior.source: swag (needs ImageNet's training set)."
        ) from err
    model = build_model(model_cfg["arch"], 1000, **(model_cfg.get("kwargs") or {}))
    load_backbone_state(model, load_pretrained(checkpoint)["state_dict"])
    backbone, _ = split_named_parameters(model)
    prior.check_params(backbone)
    prior.save(out)
    return prior
