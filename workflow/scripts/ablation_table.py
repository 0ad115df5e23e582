"""Glue: the per-run results of one ablation -> its tidy table (same columns as runs.csv), and an HTML page of
it (provenance columns folded, the report caption under it) for the report."""

from bayes_transfer.results import html
from bayes_transfer.results.aggregate import tidy_runs
from bayes_transfer.logs import job_log
from bayes_transfer.io import write_csv

with job_log(snakemake.log[0], f"ablation table {snakemake.wildcards.ablation}"):
    tidy = tidy_runs(snakemake.input)
    write_csv(snakemake.output.tidy, tidy)
    html.write(snakemake.output.html, html.table_page(
        tidy, index=False, title=f"Ablation '{snakemake.wildcards.ablation}': every run (tidy table)",
        caption=html.render_caption(snakemake.params.caption, snakemake), source=snakemake.output.tidy))
