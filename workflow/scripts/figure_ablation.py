"""Glue: a Fig. 3 panel of the paper's accuracy against the value one ablation varied (rules figure_rank: 3b,
figure_lambda: 3d), the CSV behind it and the figure's page for the report (figure, caption, plotted numbers)."""

import pandas as pd

from bayes_transfer.results import plots
from bayes_transfer.results.aggregate import ablation_summary
from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.io import write_csv

p, out = snakemake.params, snakemake.output
with job_log(snakemake.log[0], f"figure {snakemake.rule}"):
    style_by = getattr(p, "style_by", None)  # Fig. 3d: one line style per prior convention
    s = ablation_summary(pd.read_csv(snakemake.input[0]), p.key, by=[style_by] if style_by else None)
    write_csv(out.csv, s)
    plots.metric_vs_value(s, p.key, out.png, logx=p.logx, xlabel=p.xlabel, title=p.title, style_by=style_by,
                          style_order=list(getattr(p, "style_order", None) or []) or None)
    html.write(out.html, html.figure_page(out.png, title=p.title, data=s, source=out.csv,
                                          caption=html.render_caption(p.caption, snakemake)))
