"""Glue: fit one method at one training size for the job's seeds (all, or one: workflow.seeds_per_job); one
result file per run."""

from bayes_transfer.stages.experiment import fit_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
seeds = list(snakemake.params.seeds)
with job_log(snakemake.log[0], f"fit {w.pretraining} {w.method} n={w.n} seeds={seeds}"):
    set_threads(snakemake.threads)
    fit_stage(w.method, int(w.n), w.pretraining, seeds,
              checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.get("prior"),
              tuning_path=snakemake.input.get("tuning"), data_cfg=snakemake.params.data,
              model_cfg=snakemake.params.model, train_cfg=snakemake.params.train, outs=list(snakemake.output),
              # from the config, not params: how often a state is saved never changes a result
              checkpoint_every=snakemake.config.get("resume", {}).get("checkpoint_every", 0))
