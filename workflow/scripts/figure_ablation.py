"""Glue: the Fig. 3 panels (3a landscape, 3b rank, 3c learned mean, 3d lambda) and the CSV behind each."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
import pandas as pd

from bayes_transfer.results import plots
from bayes_transfer.results.aggregate import summarise, sweep_summary
from bayes_transfer.stages.landscape import landscape_summary
from bayes_transfer.logs import job_log

rule, p, out = snakemake.rule, snakemake.params, snakemake.output
with job_log(snakemake.log[0], f"figure {rule}"):
    if rule == "figure_landscape":
        table = pd.read_csv(snakemake.input[0])
        landscape_summary(table).to_csv(out.csv, index=False)
        plots.landscape_plot(table, out.png, title=f"{p.pretraining} prior: test loss along directions (± 1 SE)")
    elif rule == "figure_rank":
        s = sweep_summary(pd.read_csv(snakemake.input[0]), "prior_rank")
        s.to_csv(out.csv, index=False)
        plots.metric_vs_value(s, "prior_rank", out.png, xlabel="rank k of the low-rank part (0 = diagonal)",
                              title=f"{p.pretraining} prior, n={p.n}, {p.truncation} truncation (± 1 SE)")
    elif rule == "figure_lambda":
        s = sweep_summary(pd.read_csv(snakemake.input[0]), "prior_scale")
        s.to_csv(out.csv, index=False)
        plots.metric_vs_value(s, "prior_scale", out.png, logx=True, xlabel="prior rescaling λ",
                              title=f"{p.pretraining} prior, n={p.n}, {p.convention} convention (± 1 SE)")
    elif rule == "figure_learned_mean":
        runs = pd.read_csv(snakemake.input.runs)
        learned = runs[(runs["pretraining"] == p.pretraining)
                       & runs["method"].isin(["sgd_learned_prior", "bnn_learned_prior"])]
        s = summarise(pd.concat([pd.read_csv(snakemake.input.mean), learned], ignore_index=True))
        s.to_csv(out.csv, index=False)
        plots.error_vs_size(s, out.png, title=f"{p.pretraining} prior: learned covariance vs learned mean (± 1 SE)")
    else:
        raise ValueError(f"figure_ablation.py does not draw rule {rule!r}")
