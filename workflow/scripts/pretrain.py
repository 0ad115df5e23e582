"""Glue: pre-train the source checkpoint of one pre-training (see bayes_transfer.experiment)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.experiment import pretrain_stage, set_threads
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], f"pretrain {snakemake.wildcards.pretraining}"):
    set_threads(snakemake.threads)
    pretrain_stage(snakemake.wildcards.pretraining, snakemake.params.data, snakemake.params.model,
                   snakemake.params.pretrain, snakemake.output[0])
