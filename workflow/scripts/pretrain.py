"""Glue: the source checkpoint of one pre-training (see bayes_transfer.stages.experiment).

Embedded default: pre-trained here from scratch. Paper scale (the rule has a ``weights`` input): the fetched
ImageNet checkpoint converted into the same format.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.stages.experiment import convert_stage, pretrain_stage, set_threads
from bayes_transfer.logs import job_log

pretraining = snakemake.wildcards.pretraining
# read from the config, not params: how often a state is saved never changes a result
checkpoint_every = snakemake.config.get("resume", {}).get("checkpoint_every", 0)
with job_log(snakemake.log[0], f"pretrain {pretraining}"):
    set_threads(snakemake.threads)
    if "weights" in snakemake.input.keys():
        convert_stage(pretraining, snakemake.input.weights, snakemake.params.model, snakemake.output[0])
    else:
        pretrain_stage(pretraining, snakemake.params.data, snakemake.params.model, snakemake.params.pretrain,
                       snakemake.output[0], checkpoint_every=checkpoint_every)
