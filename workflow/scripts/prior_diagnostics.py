"""Glue: the learned priors' stationarity diagnostics (from their metadata) -> a CSV and its report page."""

from bayes_transfer.logs import job_log
from bayes_transfer.priors.diagnostics import diagnostics_table
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.results import html
from bayes_transfer.io import write_csv

out = snakemake.output
with job_log(snakemake.log[0], "prior diagnostics"):
    table = diagnostics_table({path: GaussianPrior.load(path).metadata for path in snakemake.input})
    write_csv(out.csv, table)
    html.write(out.html, html.table_page(
        table, index=False, title="Learned priors: stationarity of the SWAG snapshots",
        caption=html.render_caption(snakemake.params.caption, snakemake), source=out.csv))
