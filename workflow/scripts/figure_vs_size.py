"""Glue: a metric against training size for one pre-training (Fig. 4 test error, 5a shifted error, 5b/8 NLL, the
OOD-detection AUROCs), the
CSV behind it and the figure's page for the report (figure, caption, plotted numbers)."""

import pandas as pd

from bayes_transfer.logs import job_log
from bayes_transfer.results import html
from bayes_transfer.results.plots import error_vs_size
from bayes_transfer.io import write_csv

w, p, out = snakemake.wildcards, snakemake.params, snakemake.output
LABELS = {("error", "test"): "test error (%)", ("error", "shifted_test"): "shifted-test error (%)",
          ("nll", "test"): "test NLL (nats)",
          ("auroc_entropy", "ood_source"): "AUROC of the predictive entropy, source classes vs test",
          ("auroc_entropy", "ood_noise"): "AUROC of the predictive entropy, noise vs test",
          ("auroc_mi", "ood_source"): "AUROC of the mutual information, source classes vs test"}
with job_log(snakemake.log[0], f"figure {w.figure} {w.pretraining}"):
    s = pd.read_csv(snakemake.input.summary)
    s = s[(s["pretraining"] == w.pretraining) & s["method"].isin(p.methods)
          & (s["metric"] == p.metric) & (s["eval_set"] == p.eval_set)]
    if s.empty:
        raise ValueError(f"{snakemake.input.summary}: no {p.metric} on {p.eval_set} for {w.pretraining}")
    write_csv(out.csv, s)
    ylabel = LABELS.get((p.metric, p.eval_set), f"{p.metric} ({p.eval_set})")
    title = f"{w.pretraining} prior: {ylabel.split(' (')[0]} vs training size (± 1 SE)"
    error_vs_size(s, out.png, metric=p.metric, eval_set=p.eval_set, ylabel=ylabel,
                  scale=100.0 if p.metric == "error" else 1.0, title=title)
    html.write(out.html, html.figure_page(out.png, title=title, data=s, source=out.csv,
                                          caption=html.render_caption(p.caption, snakemake)))
