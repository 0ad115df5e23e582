"""Glue: Fig. 3a, downstream test loss and source loss along the prior's top directions and random directions
(against filter-normalised distance and prior standard deviations), the CSV behind it and the figure's page for
the report (the figure, its caption under it, the plotted numbers)."""

import pandas as pd

from bayes_transfer.results import plots
from bayes_transfer.stages.landscape import landscape_summary
from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.io import write_csv

p, out = snakemake.params, snakemake.output
with job_log(snakemake.log[0], "figure fig3a"):
    table = pd.read_csv(snakemake.input[0])
    summary = landscape_summary(table)
    write_csv(out.csv, summary)
    k = table["seed"].nunique()
    sets = " and source" if "loss_set" in table and (table["loss_set"] == "source").any() else ""
    bn = {"recompute": "recomputed", "stale": "stale"}[table["batchnorm"].iloc[0] if "batchnorm" in table else "stale"]
    title = (f"{p.pretraining} prior: downstream{sets} loss along directions, BatchNorm {bn} "
             + (f"(± 1 SE, {k} seeds)" if k > 1 else "(1 seed)"))
    plots.landscape_plot(table, out.png, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=summary, source=out.csv,
                                          caption=html.render_caption(p.caption, snakemake)))
