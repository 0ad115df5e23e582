"""Glue: the ranking of one rung (rule tune_rung) or the selection of one size (rule tune, tune_split point) from
the slot files of the grid points; no fit."""

from bayes_transfer.stages.tuning import Tuning, rung_stage, select_stage
from bayes_transfer.logs import job_log

w, p = snakemake.wildcards, snakemake.params
with job_log(snakemake.log[0], f"{snakemake.rule} {w.pretraining} {w.method} n={w.n}"):
    # the checkpoint and prior are not read: the slot files carry their checksums
    setting = Tuning(w.method, w.pretraining, "", None, p.data, p.model, p.train, p.grid, p.tuning)
    if hasattr(w, "rung"):
        rung_stage(setting, int(w.rung), list(snakemake.input), snakemake.output[0])
    else:
        select_stage(setting, int(w.n), list(snakemake.input.slots), snakemake.output[0],
                     list(snakemake.input.rankings))
