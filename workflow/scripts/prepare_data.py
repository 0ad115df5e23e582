"""Glue: check (or let torchvision download) one paper-scale dataset; write its manifest."""

from bayes_transfer.data.paper import prepare_dataset
from bayes_transfer.stages.experiment import write_json
from bayes_transfer.logs import job_log

data = snakemake.params.data
with job_log(snakemake.log[0], f"prepare data {snakemake.wildcards.dataset}"):
    manifest = prepare_dataset(snakemake.wildcards.dataset, data["root"], download=data["download"],
                               shifted_test=data["shifted_test"])
    write_json(snakemake.output[0], manifest)
