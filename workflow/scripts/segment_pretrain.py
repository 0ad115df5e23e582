"""Glue: pre-train a stand-in segmentation backbone on the source digits (embedded default only)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.stages.experiment import pretrain_stage, set_threads
from bayes_transfer.logs import job_log

w = snakemake.wildcards
with job_log(snakemake.log[0], f"segmentation backbone {w.backbone}: pretrain {w.pretraining}"):
    set_threads(snakemake.threads)
    pretrain_stage(w.pretraining, snakemake.params.data, snakemake.params.model, snakemake.params.pretrain,
                   snakemake.output[0])
