"""Glue: the ECE table (methods x training sizes, mean ± SE over seeds, %) of one pre-training."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
import pandas as pd

from bayes_transfer.results.aggregate import method_by_size_table, to_markdown
from bayes_transfer.logs import job_log

w, out = snakemake.wildcards, snakemake.output
with job_log(snakemake.log[0], f"ECE table {w.pretraining}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[s["pretraining"] == w.pretraining]
    s[(s["metric"] == "ece") | s["metric"].isna()].to_csv(out.csv, index=False)
    table = method_by_size_table(s, "ece", "test", list(snakemake.params.methods))
    table.columns = [f"n={c}" for c in table.columns]
    with open(out.md, "w") as fh:
        fh.write(to_markdown(table, f"{w.pretraining} prior: expected calibration error (%, 15 bins) on the test "
                                    "set, mean ± SE over seeds"))
