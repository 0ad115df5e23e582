"""Glue: SNR pruning of a Bayes-by-Backprop prior (issue 14): the curve's CSV, its figure and report page."""

import pandas as pd

from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.results.pruning_plots import pruning_plot
from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.stages.pruning import pruning_stage

w, out = snakemake.wildcards, snakemake.output
with job_log(snakemake.log[0], f"pruning {w.variant}"):
    set_threads(snakemake.threads)
    pruning_stage(snakemake.input.prior, snakemake.input.checkpoint, snakemake.params.data, snakemake.params.model,
                  out.csv)
    table = pd.read_csv(out.csv)
    title = f"{w.variant} prior: source accuracy against weights pruned (BYOV's SNR pruning)"
    pruning_plot(table, out.png, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=table, source=out.csv,
                                          caption=html.render_caption(snakemake.params.caption, snakemake)))
