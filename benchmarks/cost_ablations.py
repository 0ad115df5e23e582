"""The cost model's Fig. 3 ablations and segmentation (Tables 1, 15, 16): the jobs of workflow/rules/ablation.smk
and workflow/rules/segmentation.smk with their GPU seconds, for benchmarks/gpu_hours.py (which documents the
step-time assumptions; this module adds DeepLabv3+'s).

Ablations (stage ``ablation``, the main experiment only: the sweep's experiments switch them off):

* ``ablation_rank``: one job per method of ablations.rank.methods, each fitting ranks x seeds runs at
  ablations.n_train (bayes_transfer.stages.ablation.ablation_stage: fit_stage per value, every run evaluated on
  the test sets as a fit is; the rank changes only the prior's cost, which is ignored); with
  workflow.seeds_per_job 1 (paper scale) one job per (method, rank, seed), as workflow/rules/ablation.smk makes;
* ``ablation_lambda``: one job per method and convention, each fitting prior_scales x seeds runs; with
  workflow.seeds_per_job 1 one job per (method, convention, prior scale, seed);
* Fig. 3c (ablations.learned_mean.methods): the tune and fit rules run for its methods with the prior of
  ablations.pretraining at every size, priced as an experiment of those methods (rules ``tune_point``, ``tune``,
  ``fit``, ...);
* ``landscape``: one job; per seed the BatchNorm recomputation and the features of n_train images, then for each
  of the prior_directions + random_directions directions and each of the ``points`` distances along it (one line
  per direction, not a grid) a BatchNorm recomputation on the n_train images (batchnorm: recompute) and the loss
  on the test set, plus the source loss on source_examples (recomputed and evaluated; two views for SimCLR).
  Forward passes only (the linear head's L-BFGS on the features is ignored).

Segmentation (stage ``segmentation``): one ``segment`` job per table cell (segmentation_common.smk seg_cells), or
per (cell, seed) with workflow.seeds_per_job 1 (paper scale), runs its seeds one after another: segmentation.train.steps of batch_size crops, then the evaluation of the whole val
images once per kept sample (cycles x samples_per_cycle for the SG-MCMC methods, 1 for SGD). Val sets: PASCAL VOC
2012 1,449 images, taken as 500 x 375 (most VOC images are 500 on the long side); Cityscapes 500 images of
1024 x 2048. Crops and images are padded to a multiple of 16 (PadTo, output stride 16): 513 -> 528.
``segment_pretrain`` / ``segment_prior`` (a backbone entry with its own arch and no explicit checkpoint / prior
file) pre-train for pretrain.steps and learn a SWAG prior as learn_prior does; at paper scale none runs (ResNet-50
uses the main pipeline's checkpoints and priors, ResNet-101 the cifar10_resnet101 experiment's files).

DeepLabv3+ forward pass at 513 x 513, output stride 16: ResNet-50 62.7 GMAC, ResNet-101 83.4 GMAC, the counts
published with VainF/DeepLabV3Plus-Pytorch (README, "Performance on Pascal VOC2012 Aug", FLOPs column; the 62.7
is multiply-adds: ResNet-50's 4.1 GMAC at 224 x 224 scaled to 513 x 513 with its last stage at twice the
resolution is ~34 GMAC, its ASPP with full 3 x 3 atrous convolutions ~16 GMAC, its decoder's 3 x 3 conv at stride
4 ~12 GMAC). They scale with the pixels. That model has a dense ASPP; ours (smp, aspp_separable: true) has
separable ones but a second 3 x 3 decoder convolution, so the count is an estimate within ~15 %. A calibration
entry with arch ``deeplabv3plus_<backbone>`` (image_size the crop size, batch_size segmentation.train's) replaces
the FLOP estimate, as for classification: seconds per training step; an evaluated image's forward pass is a third
of the step time per crop, scaled by its pixels over the crop's.

Dependencies (for gpu_hours.py's wall-clock sum): the rank and lambda ablations read the tuning at n_train (tune
stage), checkpoint and prior; landscape the checkpoint and prior; Fig. 3c's fits its own tuning (phase 1 of the
stage after its tuning jobs, phase 0). Segmentation reads only checkpoints and priors (segment_pretrain ->
segment_prior -> segment: phases 0, 1, 2).
"""

from __future__ import annotations

import math

from bayes_transfer.inference.methods import METHODS

#: DeepLabv3+ multiply-adds of one 513 x 513 forward pass at output stride 16 (VainF/DeepLabV3Plus-Pytorch)
DEEPLAB_GMAC_513 = {"resnet50": 62.7, "resnet101": 83.4}
#: val images and pixels per image (padded to a multiple of 16) of the paper's segmentation sets
SEG_VAL = {"voc2012": (1_449, 512 * 384), "cityscapes": (500, 1024 * 2048)}
SEG_LEARNED = ("bnn_learned_prior", "sgd_learned_prior")


def _padded(pixels_side: int, stride: int = 16) -> int:
    return math.ceil(pixels_side / stride) * stride


def seg_step(t, arch: str, crop: int, batch: int) -> float:
    """Seconds of one DeepLabv3+ training step of ``batch`` crops (calibration entry ``deeplabv3plus_<arch>``)."""
    key = (f"deeplabv3plus_{arch}", crop, batch)
    if key in t.measured:
        t.used.add("measured")
        return t.measured[key]
    if arch not in DEEPLAB_GMAC_513:
        raise ValueError(f"no DeepLabv3+ FLOP count for backbone {arch!r}; known: {sorted(DEEPLAB_GMAC_513)}")
    t.used.add("FLOP estimate")
    flop = 2 * DEEPLAB_GMAC_513[arch] * 1e9 * _padded(crop) ** 2 / 513 ** 2
    return 3 * flop * batch / (t.tflops * 1e12)


def seg_image_forward(t, arch: str, crop: int, batch: int, pixels: int) -> float:
    """Seconds of the forward pass of one evaluated image of ``pixels`` pixels."""
    return seg_step(t, arch, crop, batch) / (3 * batch) * pixels / _padded(crop) ** 2


def ablation_jobs(cfg: dict, t, test: int, shifted: int, run_seconds, experiment_jobs
                  ) -> list[tuple[str, float, int]]:
    """(rule, GPU seconds, phase) of every job of the Fig. 3 ablations of one experiment; ``test`` and
    ``shifted`` the sizes of its test sets. ``run_seconds`` and ``experiment_jobs`` are gpu_hours.py's (one
    classification run; the jobs of an experiment)."""
    abl = cfg["ablations"]
    arch, size, hp = cfg["model"]["arch"], cfg["data"]["image_size"], cfg["train"]
    test_images = test + shifted
    seeds = len(cfg["seeds"])
    per_seed = cfg["workflow"]["seeds_per_job"] == 1  # one job per (value, seed), else one for all
    jobs = []

    def add(rule: str, runs: int, run: float) -> None:
        jobs.extend([(rule, run, 0)] * runs if per_seed else [(rule, runs * run, 0)])

    for method in abl["rank"]["methods"]:
        add("ablation_rank", len(abl["rank"]["ranks"]) * seeds,
            run_seconds(method, hp, t, arch, size, test_images))
    for method in abl["lambda"]["methods"]:
        for _convention in abl["lambda"]["conventions"]:
            add("ablation_lambda", len(abl["lambda"]["prior_scales"]) * seeds,
                run_seconds(method, hp, t, arch, size, test_images))
    # the tuning the rank / lambda ablations read at n_train: the main tune jobs', unless the main experiment
    # does not tune that method for that pre-training
    grids, inherit = cfg["tuning"]["grids"], cfg["tuning"]["inherit"]
    ablated = abl["rank"]["methods"] + abl["lambda"]["methods"]
    main = {inherit.get(m, m) for m in cfg["methods"]} if ablated and abl["pretraining"] in cfg["pretrainings"] \
        else set()
    extra = sorted({m for m in ablated if grids.get(inherit.get(m, m)) and inherit.get(m, m) not in main})
    if extra:
        extra_cfg = cfg | {"pretrainings": [abl["pretraining"]], "methods": extra, "sizes": [abl["n_train"]]}
        jobs += [(job.job_class, job.seconds, 0) for job in experiment_jobs(extra_cfg, t) if job.stage == "tune"]
    if abl["learned_mean"]["methods"]:
        mean_cfg = cfg | {"pretrainings": [abl["pretraining"]], "methods": list(abl["learned_mean"]["methods"])}
        for job in experiment_jobs(mean_cfg, t):
            if job.stage in ("tune", "fit"):
                jobs.append((job.job_class, job.seconds, 0 if job.stage == "tune" else 1))
    land = abl["landscape"]
    if land["enabled"]:
        n = land["n_train"]
        recompute = n if land["batchnorm"] == "recompute" else 0
        views = 2 if abl["pretraining"] == "simclr" else 1
        source = (2 if recompute else 1) * views * land["source_examples"]
        per_point = recompute + test + source
        directions = land["prior_directions"] + land["random_directions"]
        images = seeds * (recompute + n + directions * land["points"] * per_point)
        jobs.append(("landscape", images * t.image_forward(arch, size, hp["batch_size"]), 0))
    return jobs


def seg_arch(cfg: dict, backbone: str) -> str:
    entry = cfg["segmentation"][backbone]
    return entry["arch"] or cfg["model"]["arch"]


def seg_cells(seg: dict) -> list[tuple[str, str, str, str]]:
    """(dataset, backbone, pretraining, method) of every cell, as segmentation_common.smk's seg_cells."""
    return [(d, b, p, m) for d in seg["datasets"] for b in seg["backbones"] for m in seg["methods"]
            for p in (seg[b]["pretrainings"] if m in SEG_LEARNED else ["supervised"])]


def segmentation_jobs(cfg: dict, t) -> list[tuple[str, float, int]]:
    """(rule, GPU seconds, phase) of every segmentation job of one experiment."""
    seg = cfg["segmentation"]
    if not seg["enabled"]:
        return []
    cells = seg_cells(seg)
    jobs = []
    own = {b for b in seg["backbones"] if seg[b]["arch"] is not None}
    checkpoints = sorted({(b, p) for _d, b, p, _m in cells
                          if b in own and not (seg[b].get("checkpoints") or {}).get(p)})
    priors = sorted({(b, p) for _d, b, p, m in cells
                     if m in SEG_LEARNED and b in own and not (seg[b].get("priors") or {}).get(p)})
    size = cfg["data"]["image_size"]
    for b, p in checkpoints:
        pre, views = cfg["pretrain"], 2 if p == "simclr" else 1
        jobs.append(("segment_pretrain", views * pre["steps"] * t.step(seg[b]["arch"], size, pre["batch_size"]), 0))
    for b, p in priors:
        sw, views = cfg["swag"], 2 if p == "simclr" else 1
        steps = sw["cycles"] * sw["steps_per_cycle"]
        jobs.append(("segment_prior", views * steps * t.step(seg[b]["arch"], size, sw["batch_size"]), 1))
    hp = seg["train"]
    for dataset, backbone, _p, method in cells:
        if dataset not in SEG_VAL:
            raise ValueError(f"no val set size for segmentation dataset {dataset!r}; known: {sorted(SEG_VAL)}")
        arch, crop, batch = seg_arch(cfg, backbone), seg[dataset]["crop_size"], hp["batch_size"]
        images, pixels = SEG_VAL[dataset]
        evaluations = hp["cycles"] * hp["samples_per_cycle"] if METHODS[method].bayesian else 1
        run = (hp["steps"] * seg_step(t, arch, crop, batch)
               + evaluations * images * seg_image_forward(t, arch, crop, batch, pixels))
        if cfg["workflow"]["seeds_per_job"] == 1:  # one job per (cell, seed)
            jobs += [("segment", run, 2)] * len(seg["seeds"])
        else:
            jobs.append(("segment", len(seg["seeds"]) * run, 2))
    return jobs
