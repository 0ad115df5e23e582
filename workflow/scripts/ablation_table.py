"""Glue: the per-run results of one ablation -> its tidy table (same columns as runs.csv)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.results.aggregate import tidy_runs
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], f"ablation table {snakemake.wildcards.ablation}"):
    tidy_runs(snakemake.input).to_csv(snakemake.output.tidy, index=False)
