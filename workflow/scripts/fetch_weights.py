"""Glue: fetch one ImageNet source checkpoint (torchvision weights into TORCH_HOME, or a SimCLR file)."""

from bayes_transfer.models.checkpoints import fetch_source_weights
from bayes_transfer.stages.experiment import write_json
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"fetch weights {w.arch} {w.pretraining}"):
    manifest = fetch_source_weights(w.arch, w.pretraining, snakemake.params.checkpoints, root=snakemake.params.root)
    write_json(snakemake.output[0], manifest)
