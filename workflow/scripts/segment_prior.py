"""Glue: learn the SWAG prior of a stand-in segmentation backbone (embedded default only)."""

from bayes_transfer.stages.experiment import prior_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"segmentation backbone {w.backbone}: prior {w.pretraining}"):
    set_threads(snakemake.threads)
    prior_stage(w.pretraining, snakemake.input.checkpoint, snakemake.params.data, snakemake.params.model,
                snakemake.params.swag, snakemake.output[0])
