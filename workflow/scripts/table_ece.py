"""Glue: the ECE table (methods x training sizes, mean ± SE over seeds, %) of one pre-training, Markdown and
an HTML page (the table, the report caption under it) for the report."""

import pandas as pd

from bayes_transfer.results import html
from bayes_transfer.results.aggregate import method_by_size_table, to_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.io import write_csv, atomic_open

w, out = snakemake.wildcards, snakemake.output
with job_log(snakemake.log[0], f"ECE table {w.pretraining}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[s["pretraining"] == w.pretraining]
    write_csv(out.csv, s[(s["metric"] == "ece") | s["metric"].isna()])
    table = method_by_size_table(s, "ece", "test", list(snakemake.params.methods))
    table.columns = [f"n={c}" for c in table.columns]
    title = f"{w.pretraining} prior: expected calibration error (%, 15 bins) on the test set, mean ± SE over seeds"
    with atomic_open(out.md, "w") as fh:
        fh.write(to_markdown(table, title))
    html.write(out.html, html.table_page(table, title=title, source=f"{out.md} (the summary rows: {out.csv})",
                                         caption=html.render_caption(snakemake.params.caption, snakemake)))
