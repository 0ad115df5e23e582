"""Glue: tables in the layout of Tables 2-5/10-13 (test error) and Table 14 (shifted test), Markdown + LaTeX,
and an HTML page of each (the table, the report caption under it) for the report."""

import pandas as pd

from bayes_transfer.results import html
from bayes_transfer.results.aggregate import method_by_size_table, to_latex, to_markdown
from bayes_transfer.logs import job_log
from bayes_transfer.io import atomic_open

p = snakemake.wildcards.pretraining
out = snakemake.output
with job_log(snakemake.log[0], f"tables {p}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[s["pretraining"] == p]
    for eval_set, md, tex, page, what in (("test", out.md, out.tex, out.html, "test error"),
                                          ("shifted_test", out.shifted_md, out.shifted_tex, out.shifted_html,
                                           "shifted-test error")):
        table = method_by_size_table(s, "error", eval_set, list(snakemake.params.methods))
        table.columns = [f"n={c}" for c in table.columns]
        caption = (f"{snakemake.params.dataset}, {p} prior: {what} (%) by number of training examples, "
                   f"mean ± SE over seeds; Bayesian methods: {snakemake.params.chains} chain(s) per run (paper: 5)")
        with atomic_open(md, "w") as fh:
            fh.write(to_markdown(table, caption))
        with atomic_open(tex, "w") as fh:
            fh.write(to_latex(table, caption, f"tab:{eval_set}_{p}"))
        html.write(page, html.table_page(
            table, title=caption, caption=html.render_caption(snakemake.params.captions[eval_set], snakemake),
            source=f"{md} and {tex}"))
