"""Glue: fit one method at one training size for every seed; one result file per run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.stages.experiment import fit_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"fit {w.pretraining} {w.method} n={w.n}"):
    set_threads(snakemake.threads)
    fit_stage(w.method, int(w.n), w.pretraining, list(snakemake.params.seeds),
              checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.get("prior"),
              tuning_path=snakemake.input.get("tuning"), data_cfg=snakemake.params.data,
              model_cfg=snakemake.params.model, train_cfg=snakemake.params.train, outs=list(snakemake.output),
              # from the config, not params: how often a state is saved never changes a result
              checkpoint_every=snakemake.config.get("resume", {}).get("checkpoint_every", 0))
