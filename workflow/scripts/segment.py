"""Glue: one cell of the segmentation tables (dataset x backbone x pretraining x method), its seeds (all, or one
with workflow.seeds_per_job 1)."""

from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.logs import job_log
from bayes_transfer.stages.segmentation import segmentation_stage

w = snakemake.wildcards
# read from the config, not params: how often a state is saved never changes a result
checkpoint_every = snakemake.config.get("resume", {}).get("checkpoint_every", 0)
with job_log(snakemake.log[0], f"segment {w.dataset} {w.backbone} {w.pretraining} {w.method}"):
    set_threads(snakemake.threads)
    segmentation_stage(w.dataset, w.backbone, w.pretraining, w.method, list(snakemake.params.seeds),
                       checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.get("prior"),
                       dataset_cfg=snakemake.params.dataset, model_cfg=snakemake.params.model,
                       backbone_model=snakemake.params.backbone_model, train_cfg=snakemake.params.train,
                       digits_cfg=snakemake.params.digits, outs=list(snakemake.output),
                       checkpoint_every=checkpoint_every)
