# Stage 3: select each method's hyper-parameters on validation data, for every training size
# (bayes_transfer.stages.experiment.tune_stage: the protocol, the score, the flags of a selection). The jobs are cut
# by workflow.tune_split (bayes_transfer.stages.tuning), the budget by tuning.strategy (grid or successive halving,
# bayes_transfer.stages.halving); the tuning files results/tuning/<p>/<m>/n<n>.json are the same whatever the split.

from bayes_transfer.stages import halving, selection

#: the tuning keys a tune job reads (the grids and inherit reach it through params.grid and the rule graph)
TUNING_KEYS = ("seed", "holdout_fraction", "metric", "validation", "score", "weight_decay_over_lr")
#: tuning.strategy (grid: every point at train.steps; successive_halving: rungs, bayes_transfer.stages.halving)
TUNE_STRATEGY = config["tuning"]["strategy"]
#: workflow.tune_split: method (one job per pre-training and method), size (one per size) or point (one per
#: points_per_job grid points or rung slots, then a small ranking job per rung and a small selection job per size)
TUNE_SPLIT = config["workflow"]["tune_split"]
POINTS_PER_JOB = config["workflow"]["points_per_job"]
#: what a tune job reads of the tuning section; the strategy's keys only where it is not the grid, so that the
#: grid's params (and the files of a finished run) stay as they were
TUNE_PARAMS = canon(
    {k: v for k, v in config["tuning"].items() if k in TUNING_KEYS}
    | (
        {"strategy": TUNE_STRATEGY, "successive_halving": config["tuning"]["successive_halving"]}
        if TUNE_STRATEGY != "grid"
        else {}
    )
)
#: [(steps, points), ...] per rung of a method's tuning (the grid: one rung of every point)
tune_schedule = lambda method: halving.plan(
    len(selection.expand_grid(GRIDS[method])), config["train"]["steps"], config["tuning"],
    halving.min_fit_steps(method, config["train"]),
)
#: what a tune job's log and benchmark paths name
TUNE_JOB = "{pretraining}/{method}" if TUNE_SPLIT == "method" else "{pretraining}/{method}/n{n}"
tune_params = dict(
    data=canon(config["data"]),
    model=canon(config["model"]),
    train=lambda w: canon(relevant_hyper(w.method, config["train"])),
    grid=lambda w: canon(GRIDS[w.method]),
    tuning=TUNE_PARAMS,
    sizes=(lambda w: [int(w.n)]) if TUNE_SPLIT != "method" else SIZES,
)


#: the prior variants' pre-training names: with the one-job-per-method split they are tuned per size, at their own
#: sizes only (rule tune_variant), since a variant runs at a few sizes
VARIANT_NAMES = "|".join(PRIOR_VARIANTS) or "(?!)"
MAIN_PRETRAININGS = "supervised|simclr|byol"

if TUNE_SPLIT == "method":

    rule tune_variant:
        wildcard_constraints:
            pretraining=VARIANT_NAMES,
        input:
            unpack(tune_inputs),
        output:
            "results/tuning/{pretraining}/{method}/n{n}.json",
        params:
            **(tune_params | {"sizes": lambda w: [int(w.n)]}),
        log:
            "results/logs/tune/{pretraining}/{method}/n{n}.log",
        benchmark:
            "results/benchmarks/tune/{pretraining}/{method}/n{n}.tsv"
        threads: config["threads"]
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/tune.py"


if TUNE_SPLIT != "point":

    rule tune:
        wildcard_constraints:
            pretraining=MAIN_PRETRAININGS if TUNE_SPLIT == "method" else ".+",
        input:
            unpack(tune_inputs),
        output:
            (
                ["results/tuning/{pretraining}/{method}/n%d.json" % n for n in SIZES]
                if TUNE_SPLIT == "method"
                else "results/tuning/{pretraining}/{method}/n{n}.json"
            ),
        params:
            **tune_params,
        log:
            "results/logs/tune/%s.log" % TUNE_JOB,
        benchmark:
            "results/benchmarks/tune/%s.tsv" % TUNE_JOB
        threads: config["threads"]
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/tune.py"


else:
    #: the files of one (pre-training, method, size): a rung's parts (points_per_job points each), its ranking
    tune_part_paths = lambda w, rung: [
        f"results/tuning/{w.pretraining}/{w.method}/n{w.n}/rung{rung}/part{j}.json"
        for j in range(-(-tune_schedule(w.method)[rung][1] // POINTS_PER_JOB))
    ]
    tune_point_inputs = lambda w: tune_inputs(w) | (
        {"ranking": f"results/tuning/{w.pretraining}/{w.method}/n{w.n}/rung{int(w.rung) - 1}.json"}
        if int(w.rung)
        else {}
    )
    tune_select_inputs = lambda w: {
        "slots": tune_part_paths(w, len(tune_schedule(w.method)) - 1),
        "rankings": [
            f"results/tuning/{w.pretraining}/{w.method}/n{w.n}/rung{r}.json"
            for r in range(len(tune_schedule(w.method)) - 1)
        ],
    }

    rule tune_point:
        input:
            unpack(tune_point_inputs),
        output:
            r"results/tuning/{pretraining}/{method}/n{n}/rung{rung,\d+}/part{part,\d+}.json",
        params:
            **tune_params,
        log:
            "results/logs/tune/{pretraining}/{method}/n{n}/rung{rung}/part{part}.log",
        benchmark:
            "results/benchmarks/tune/{pretraining}/{method}/n{n}/rung{rung}/part{part}.tsv"
        threads: config["threads"]
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/tune_point.py"

    rule tune_rung:
        input:
            lambda w: tune_part_paths(w, int(w.rung)),
        output:
            r"results/tuning/{pretraining}/{method}/n{n}/rung{rung,\d+}.json",
        params:
            **tune_params,
        log:
            "results/logs/tune/{pretraining}/{method}/n{n}/rung{rung}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/tune_select.py"

    rule tune:
        input:
            unpack(tune_select_inputs),
        output:
            "results/tuning/{pretraining}/{method}/n{n}.json",
        params:
            **tune_params,
        log:
            "results/logs/tune/{pretraining}/{method}/n{n}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/tune_select.py"


#: the flagged selections of every tuning file this config uses (main methods, the learned-mean ablation, the
#: prior variants)
TUNING_FLAG_FILES = {"csv": "results/audit/tuning_flags.csv", "md": "results/audit/tuning_flags.md"}
# lambdas, not functions: rule files keep functions in common modules (snakemake --lint)
tuning_flag_targets = lambda: list(TUNING_FLAG_FILES.values())
tuning_flag_inputs = lambda w: sorted(
    (
        {tuning_path(p, m, n) for p in PRETRAININGS for m in METHOD_LIST for n in SIZES}
        | {tuning_path(ABL_P, m, n) for m in MEAN_METHODS for n in SIZES}
        | {tuning_path(v, m, n) for v, m, n in variant_cells()}
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
