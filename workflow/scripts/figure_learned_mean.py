"""Glue: Fig. 3c, the learned covariance against an isotropic prior around the learned mean, over training sizes;
the CSV behind it and the figure's page for the report (figure, caption, plotted numbers)."""

import pandas as pd

from bayes_transfer.results import plots
from bayes_transfer.results.aggregate import summarise
from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.io import write_csv

p, out = snakemake.params, snakemake.output
with job_log(snakemake.log[0], "figure fig3c"):
    runs = pd.read_csv(snakemake.input.runs)
    learned = runs[(runs["pretraining"] == p.pretraining)
                   & runs["method"].isin(["sgd_learned_prior", "bnn_learned_prior"])]
    s = summarise(pd.concat([pd.read_csv(snakemake.input.mean), learned], ignore_index=True))
    write_csv(out.csv, s)
    title = f"{p.pretraining} prior: learned covariance vs learned mean (± 1 SE)"
    plots.error_vs_size(s, out.png, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=s, source=out.csv,
                                          caption=html.render_caption(p.caption, snakemake)))
