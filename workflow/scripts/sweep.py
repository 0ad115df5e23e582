"""Glue: one learned-prior method refitted over a sweep of one hyper-parameter (Fig. 3b rank, Fig. 3d lambda)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.stages.ablation import sweep_stage
from bayes_transfer.stages.experiment import set_threads
from bayes_transfer.logs import job_log

w, p = snakemake.wildcards, snakemake.params
seeds, values = list(p.seeds), list(p["values"])
outs = list(snakemake.output)
with job_log(snakemake.log[0], f"sweep {p.key} {w.pretraining} {w.method} n={p.n}"):
    set_threads(snakemake.threads)
    sweep_stage(w.method, int(p.n), w.pretraining, seeds, p.key, values,
                [outs[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(values))],
                checkpoint=snakemake.input.checkpoint, prior_path=snakemake.input.prior,
                tuning_path=snakemake.input.get("tuning"), data_cfg=p.data, model_cfg=p.model, train_cfg=p.train,
                fixed=dict(p.fixed))
