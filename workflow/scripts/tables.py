"""Glue: tables in the layout of Tables 2-5/10-13 (test error) and Table 14 (shifted test), Markdown + LaTeX."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
import pandas as pd

from bayes_transfer.results.aggregate import method_by_size_table, to_latex, to_markdown
from bayes_transfer.logs import job_log

p = snakemake.wildcards.pretraining
out = snakemake.output
with job_log(snakemake.log[0], f"tables {p}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[s["pretraining"] == p]
    for eval_set, md, tex, what in (("test", out.md, out.tex, "test error"),
                                    ("shifted_test", out.shifted_md, out.shifted_tex, "shifted-test error")):
        table = method_by_size_table(s, "error", eval_set, list(snakemake.params.methods))
        table.columns = [f"n={c}" for c in table.columns]
        caption = (f"{snakemake.params.dataset}, {p} prior: {what} (%) by number of training examples, "
                   "mean ± SE over seeds")
        with open(md, "w") as fh:
            fh.write(to_markdown(table, caption))
        with open(tex, "w") as fh:
            fh.write(to_latex(table, caption, f"tab:{eval_set}_{p}"))
