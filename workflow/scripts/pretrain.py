"""Glue: train the source checkpoint of one pre-training from scratch (rule pretrain of the embedded default; see
bayes_transfer.stages.experiment). Paper scale converts a fetched checkpoint instead (convert_checkpoint.py)."""

from bayes_transfer.stages.experiment import pretrain_stage, set_threads
from bayes_transfer.logs import job_log

pretraining = snakemake.wildcards.pretraining
# read from the config, not params: how often a state is saved never changes a result
checkpoint_every = snakemake.config.get("resume", {}).get("checkpoint_every", 0)
with job_log(snakemake.log[0], f"pretrain {pretraining}"):
    set_threads(snakemake.threads)
    pretrain_stage(pretraining, snakemake.params.data, snakemake.params.model, snakemake.params.pretrain,
                   snakemake.output[0], checkpoint_every=checkpoint_every)
