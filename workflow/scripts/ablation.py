"""Glue: one learned-prior method refitted while one hyper-parameter walks over a list (rules ablation_rank,
ablation_lambda: Fig. 3b rank, Fig. 3d lambda)."""

from bayes_transfer.stages.ablation import ablation_stage
from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.logs import job_log

w, p = snakemake.wildcards, snakemake.params
seeds, values = list(p.seeds), list(p["values"])
outs = list(snakemake.output)
convention = getattr(w, "convention", None)  # the lambda ablation's prior convention (rule ablation_lambda)
with job_log(snakemake.log[0], f"ablation {p.key} {w.pretraining} {w.method} n={p.n}"
             + (f" {convention} convention" if convention else "")):
    set_threads(snakemake.threads)
    ablation_stage(w.method, int(p.n), w.pretraining, seeds, p.key, values,
                   [outs[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(values))],
                   checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.prior,
                   tuning_path=snakemake.input.get("tuning"), data_cfg=p.data, model_cfg=p.model, train_cfg=p.train,
                   fixed=dict(p.fixed), convention=convention)
