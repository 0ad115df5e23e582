"""Glue: the Fig. 4 analogue (test error against training size) for one pre-training."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
import pandas as pd

from bayes_transfer.logs import job_log
from bayes_transfer.plots import error_vs_size

p = snakemake.wildcards.pretraining
with job_log(snakemake.log[0], f"figure fig4 {p}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[(s["pretraining"] == p) & s["method"].isin(snakemake.params.methods)]
    error_vs_size(s, snakemake.output[0], title=f"{p} prior: test error vs training size (± 1 SE)")
