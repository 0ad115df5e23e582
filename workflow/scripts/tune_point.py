"""Glue: workflow.points_per_job grid points (rung slots with successive halving) of one method at one size
(tune_split point)."""

from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.stages.tuning import Tuning, point_stage
from bayes_transfer.logs import job_log

w, p = snakemake.wildcards, snakemake.params
with job_log(snakemake.log[0], f"tune {w.pretraining} {w.method} n={w.n} rung {w.rung} part {w.part}"):
    set_threads(snakemake.threads)
    setting = Tuning(w.method, w.pretraining, snakemake.input.checkpoint, snakemake.input.get("prior"), p.data,
                     p.model, p.train, p.grid, p.tuning)
    point_stage(setting, int(w.n), int(w.rung), int(w.part), snakemake.output[0],
                ranking=snakemake.input.get("ranking"), per_job=snakemake.config["workflow"]["points_per_job"],
                # from the config, not params: how often a state is saved never changes a result
                checkpoint_every=snakemake.config.get("resume", {}).get("checkpoint_every", 0))
