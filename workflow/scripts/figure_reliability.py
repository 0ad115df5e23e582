"""Glue: Fig. 9, reliability diagrams per method at one training size, bins pooled over seeds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
import pandas as pd

from bayes_transfer.stages.ablation import pooled_reliability
from bayes_transfer.logs import job_log
from bayes_transfer.results.plots import reliability_diagrams

w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
runs = list(snakemake.input.runs)
per_method = len(p.seeds)
with job_log(snakemake.log[0], f"figure fig9 {w.pretraining}"):
    tables = []
    for i, method in enumerate(p.methods):
        bins = pooled_reliability(runs[i * per_method:(i + 1) * per_method])
        tables.append(bins.assign(method=method, pretraining=w.pretraining, n_train=p.n))
    bins = pd.concat(tables, ignore_index=True)
    bins.to_csv(out.csv, index=False)
    reliability_diagrams(bins, out.png, title=f"{w.pretraining} prior, n={p.n}: reliability (pooled over seeds)")
