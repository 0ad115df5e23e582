"""Glue: merge every run result into the tidy table and its summary (mean +/- SE over seeds)."""

from bayes_transfer.results.aggregate import summarise, tidy_runs
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], "aggregate"):
    tidy = tidy_runs(snakemake.input)
    tidy.to_csv(snakemake.output.tidy, index=False)
    summarise(tidy).to_csv(snakemake.output.summary, index=False)
