"""Glue: paper scale, the fetched ImageNet checkpoint of one pre-training converted into the pipeline's format
(rule pretrain at paper scale; see bayes_transfer.stages.experiment)."""

from bayes_transfer.stages.experiment import convert_stage
from bayes_transfer.logs import job_log

pretraining = snakemake.wildcards.pretraining
with job_log(snakemake.log[0], f"pretrain {pretraining} (convert)"):
    convert_stage(pretraining, snakemake.input.weights, snakemake.params.model, snakemake.output[0])
