"""Glue: tune one method on held-out validation data at every training size."""

from bayes_transfer.stages.experiment import set_threads, tune_stage
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"tune {w.pretraining} {w.method}"):
    set_threads(snakemake.threads)
    tune_stage(w.method, list(snakemake.params.sizes), w.pretraining, checkpoint=snakemake.input.checkpoint,
               prior_path=snakemake.input.get("prior"), data_cfg=snakemake.params.data,
               model_cfg=snakemake.params.model, train_cfg=snakemake.params.train, grid=snakemake.params.grid,
               tuning_cfg=snakemake.params.tuning, outs=list(snakemake.output),
               # from the config, not params: how often a state is saved never changes a result
               checkpoint_every=snakemake.config.get("resume", {}).get("checkpoint_every", 0))
