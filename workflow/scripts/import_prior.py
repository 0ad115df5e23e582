"""Glue: import the authors' released prior of one pre-training (see bayes_transfer.stages.experiment)."""

from bayes_transfer.stages.experiment import import_prior_stage
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], f"import prior {snakemake.wildcards.pretraining}"):
    import_prior_stage(snakemake.wildcards.pretraining, snakemake.input.checkpoint, snakemake.params.prefix,
                       snakemake.params.model, snakemake.output[0])
