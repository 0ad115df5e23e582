"""Glue: tune one method on held-out validation data at the job's training sizes (workflow.tune_split method: all
sizes, size: one); the grid by tune_stage, successive halving by bayes_transfer.stages.tuning.tune_sizes."""

from bayes_transfer.stages.experiment import set_threads, tune_stage
from bayes_transfer.stages.tuning import Tuning, tune_sizes
from bayes_transfer.logs import job_log

w, p = snakemake.wildcards, snakemake.params
# from the config, not params: how often a state is saved never changes a result
every = snakemake.config.get("resume", {}).get("checkpoint_every", 0)
with job_log(snakemake.log[0], f"tune {w.pretraining} {w.method} {list(p.sizes)}"):
    set_threads(snakemake.threads)
    if p.tuning.get("strategy", "grid") == "grid":
        tune_stage(w.method, list(p.sizes), w.pretraining, checkpoint=snakemake.input.checkpoint,
                   prior_path=snakemake.input.get("prior"), data_cfg=p.data, model_cfg=p.model, train_cfg=p.train,
                   grid=p.grid, tuning_cfg=p.tuning, outs=list(snakemake.output), checkpoint_every=every)
    else:
        setting = Tuning(w.method, w.pretraining, snakemake.input.checkpoint, snakemake.input.get("prior"), p.data,
                         p.model, p.train, p.grid, p.tuning)
        tune_sizes(setting, list(p.sizes), list(snakemake.output), checkpoint_every=every)
