# Input functions and config slices of the segmentation rules (workflow/rules/segmentation.smk).

from bayes_transfer.inference.segmentation import SegmentationHyper

SEG = config["segmentation"]
SEG_LEARNED = ("bnn_learned_prior", "sgd_learned_prior")


def seg_model(backbone):
    """{"arch", "kwargs"} of the network that fills the paper's column ``backbone``."""
    entry = SEG[backbone]
    if entry["arch"] is None:
        return {"arch": config["model"]["arch"], "kwargs": config["model"].get("kwargs") or {}}
    return {"arch": entry["arch"], "kwargs": {"blocks": entry["blocks"]} if entry.get("blocks") else {}}


def seg_checkpoint(backbone, pretraining):
    entry = SEG[backbone]
    if (entry.get("checkpoints") or {}).get(pretraining):
        return entry["checkpoints"][pretraining]
    if entry["arch"] is None:
        return checkpoint_path(pretraining)
    return f"results/segmentation/pretrain/{backbone}/{pretraining}.pt"


def seg_prior(backbone, pretraining):
    entry = SEG[backbone]
    if (entry.get("priors") or {}).get(pretraining):
        return entry["priors"][pretraining]
    if entry["arch"] is None:
        return prior_path(pretraining)
    return f"results/segmentation/priors/{backbone}/{pretraining}.pt"


#: one segment job per seed with workflow.seeds_per_job 1 (paper scale), else one per cell for all its seeds
SEG_PER_SEED = ONE_SEED_PER_JOB
SEG_JOB = ("{dataset}/{backbone}/{pretraining}/{method}/seed{seed}" if SEG_PER_SEED
           else "{dataset}/{backbone}/{pretraining}/{method}")


def seg_cells():
    """(dataset, backbone, pretraining, method) of every configured cell of Tables 1, 15 and 16."""
    cells = []
    for d in SEG["datasets"]:
        for b in SEG["backbones"]:
            for m in SEG["methods"]:
                pretrainings = SEG[b]["pretrainings"] if m in SEG_LEARNED else ["supervised"]
                cells += [(d, b, p, m) for p in pretrainings]
    return cells


def seg_run_paths(dataset, backbone, pretraining, method):
    return [
        f"results/segmentation/runs/{dataset}/{backbone}/{pretraining}/{method}/seed{s}.json" for s in SEG["seeds"]
    ]


def seg_inputs(wildcards):
    inputs = {"checkpoint": seg_checkpoint(wildcards.backbone, wildcards.pretraining)}
    if wildcards.method in SEG_LEARNED:
        inputs["prior"] = seg_prior(wildcards.backbone, wildcards.pretraining)
    return inputs


def seg_dataset_cfg(dataset):
    return canon(SEG["scenes"] if dataset == "digit_scenes" else SEG[dataset])


def seg_digits_cfg(dataset):
    """The digit split the scenes are drawn from (only the keys that change the scenes)."""
    if dataset != "digit_scenes":
        return {}
    return canon({k: config["data"][k] for k in ("split_seed", "n_test", "n_val")})


SEG_TABLES = [f"results/tables/{t}_segmentation.{ext}" for t in ("table1", "table15", "table16") for ext in ("md", "tex")]


def segmentation_targets():
    if not SEG["enabled"] or not seg_cells():
        return []
    return ["results/tables/segmentation_runs.csv", *SEG_TABLES]
