"""Glue: Fig. 3a data, downstream test loss and source loss along the prior's top directions and random ones
(BatchNorm recomputed at every point; see bayes_transfer.stages.landscape)."""

from bayes_transfer.stages.landscape import landscape_stage
from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.logs import job_log

p = snakemake.params
with job_log(snakemake.log[0], f"landscape {p.pretraining}"):
    set_threads(snakemake.threads)
    landscape_stage(p.pretraining, list(p.seeds), checkpoint=snakemake.input.checkpoint,
                    prior_path=snakemake.input.prior, data_cfg=p.data, model_cfg=p.model, cfg=p.landscape,
                    out=snakemake.output[0])
