"""Glue: every tuning file of this config -> the table of flagged selections (edge, chance, small validation)."""

from bayes_transfer.audit.tuning_flags import read_tuning_flags, tuning_flags_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.io import write_csv, atomic_open

with job_log(snakemake.log[0], "tuning flags") as log:
    paths = list(snakemake.input)
    flags = read_tuning_flags(paths)
    write_csv(snakemake.output.csv, flags)
    with atomic_open(snakemake.output.md, "w") as fh:
        fh.write(tuning_flags_markdown(flags, len(paths)))
    log.info("%d flag(s) over %d tuning file(s)", len(flags), len(paths))
