"""Glue: fit one method at the job's training sizes (one, or all: workflow.sizes_per_job) for the job's seeds (all,
or one: workflow.seeds_per_job); one result file per run."""

from bayes_transfer.stages.experiment import fit_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
seeds, sizes = list(snakemake.params.seeds), list(snakemake.params.sizes)
tunings = snakemake.input.get("tuning")
tunings = [tunings] if isinstance(tunings, str) else (list(tunings) if tunings else [None] * len(sizes))
outs = list(snakemake.output)
with job_log(snakemake.log[0], f"fit {w.pretraining} {w.method} n={sizes} seeds={seeds}"):
    set_threads(snakemake.threads)
    for i, (n, tuning) in enumerate(zip(sizes, tunings)):
        fit_stage(w.method, int(n), w.pretraining, seeds,
                  checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.get("prior"),
                  tuning_path=tuning, data_cfg=snakemake.params.data,
                  model_cfg=snakemake.params.model, train_cfg=snakemake.params.train,
                  outs=outs[i * len(seeds):(i + 1) * len(seeds)],
                  # from the config, not params: how often a state is saved never changes a result
                  checkpoint_every=snakemake.config.get("resume", {}).get("checkpoint_every", 0))
