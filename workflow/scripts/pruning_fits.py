"""Glue: SNR pruning of the variational fits' posteriors (issue 14): their run records' curves -> the summary's
CSV, its figure and report page."""

import json
from pathlib import Path

from bayes_transfer.io import write_csv
from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.results.pruning_plots import fit_pruning_plot
from bayes_transfer.results.pruning import fit_pruning_summary

out = snakemake.output
with job_log(snakemake.log[0], "pruning of the variational fits"):
    summary = fit_pruning_summary(json.loads(Path(p).read_text()) for p in snakemake.input)
    write_csv(out.csv, summary)
    title = "Variational fits: downstream accuracy against backbone weights pruned (BYOV's SNR pruning)"
    fit_pruning_plot(summary, out.png, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=summary, source=out.csv,
                                          caption=html.render_caption(snakemake.params.caption, snakemake)))
