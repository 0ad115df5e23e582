"""Glue: learn the prior (SWAG or Bayes by Backprop) of one pre-trained checkpoint (see bayes_transfer.stages.experiment)."""

from bayes_transfer.stages.experiment import prior_stage, set_threads
from bayes_transfer.logs import job_log

# read from the config, not params: how often a state is saved never changes a result
checkpoint_every = snakemake.config.get("resume", {}).get("checkpoint_every", 0)
with job_log(snakemake.log[0], f"learn prior {snakemake.wildcards.pretraining}"):
    set_threads(snakemake.threads)
    # a prior variant (prior.variants) is learned from its pre-training's checkpoint on that pre-training's loss
    prior_stage(snakemake.params.source, snakemake.input.checkpoint, snakemake.params.data,
                snakemake.params.model, snakemake.params.swag, snakemake.output[0],
                checkpoint_every=checkpoint_every, method=snakemake.params.method, bbb_cfg=snakemake.params.bbb)
