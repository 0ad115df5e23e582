"""Glue: Fig. 9, reliability diagrams per method at one training size, bins pooled over seeds; the CSV behind it
and the figure's page for the report (figure, caption, plotted numbers)."""

import pandas as pd

from bayes_transfer.stages.ablation import pooled_reliability
from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.results.reliability import reliability_diagrams
from bayes_transfer.io import write_csv

w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
runs = list(snakemake.input.runs)
per_method = len(p.seeds)
with job_log(snakemake.log[0], f"figure fig9 {w.pretraining}"):
    tables = []
    for i, method in enumerate(p.methods):
        bins = pooled_reliability(runs[i * per_method:(i + 1) * per_method])
        tables.append(bins.assign(method=method, pretraining=w.pretraining, n_train=p.n))
    bins = pd.concat(tables, ignore_index=True)
    write_csv(out.csv, bins)
    title = f"{w.pretraining} prior, n={p.n}: reliability (pooled over seeds)"
    reliability_diagrams(bins, out.png, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=bins, source=out.csv,
                                          caption=html.render_caption(p.caption, snakemake)))
