"""Glue: merge every run result into the tidy table and its summary (mean +/- SE over seeds)."""

from bayes_transfer.results.aggregate import summarise, tidy_runs
from bayes_transfer.logs import job_log
from bayes_transfer.io import write_csv

with job_log(snakemake.log[0], "aggregate"):
    tidy = tidy_runs(snakemake.input)
    write_csv(snakemake.output.tidy, tidy)
    write_csv(snakemake.output.summary, summarise(tidy))
