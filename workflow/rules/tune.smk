# Stage 3: select each method's hyper-parameters on validation data, for every training size
# (bayes_transfer.stages.experiment.tune_stage: the protocol, the score, the flags of a selection).

#: the tuning keys a tune job reads (the grids and inherit reach it through params.grid and the rule graph)
TUNING_KEYS = ("seed", "holdout_fraction", "metric", "validation", "score", "weight_decay_over_lr")


rule tune:
    input:
        unpack(tune_inputs),
    output:
        ["results/tuning/{pretraining}/{method}/n%d.json" % n for n in SIZES],
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        grid=lambda w: canon(GRIDS[w.method]),
        tuning=canon({k: v for k, v in config["tuning"].items() if k in TUNING_KEYS}),
        sizes=SIZES,
    log:
        "results/logs/tune/{pretraining}/{method}.log",
    benchmark:
        "results/benchmarks/tune/{pretraining}/{method}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tune.py"


#: the flagged selections of every tuning file this config uses (main methods and the learned-mean ablation)
TUNING_FLAG_FILES = {"csv": "results/audit/tuning_flags.csv", "md": "results/audit/tuning_flags.md"}
# lambdas, not functions: rule files keep functions in common modules (snakemake --lint)
tuning_flag_targets = lambda: list(TUNING_FLAG_FILES.values())
tuning_flag_inputs = lambda w: sorted(
    (
        {tuning_path(p, m, n) for p in PRETRAININGS for m in METHOD_LIST for n in SIZES}
        | {tuning_path(ABL_P, m, n) for m in MEAN_METHODS for n in SIZES}
    )
    - {None}
)


rule tuning_flags:
    input:
        tuning_flag_inputs,
    output:
        **TUNING_FLAG_FILES,
    log:
        "results/logs/audit/tuning_flags.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tuning_flags.py"
