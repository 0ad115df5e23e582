"""Glue: pre-train a stand-in segmentation backbone on the source digits (embedded default only)."""

from bayes_transfer.stages.experiment import pretrain_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"segmentation backbone {w.backbone}: pretrain {w.pretraining}"):
    set_threads(snakemake.threads)
    pretrain_stage(w.pretraining, snakemake.params.data, snakemake.params.model, snakemake.params.pretrain,
                   snakemake.output[0])
