# Stage 4: every method x training size x seed with the selected values; one result file per run.
#
# The job granularity is workflow.seeds_per_job and workflow.sizes_per_job (never a result: every run is
# independent and writes the same file either way): seeds `all` fits every seed of a (pre-training, method, size)
# in one job, which pays the ~2 s start-up of a job once; `1` (configs/paper.yaml) makes each seed its own job,
# the cell a cluster runs side by side. sizes `all` (the embedded default) fits every size and seed of a main
# pre-training's method in one job (65 -> 17 jobs); the prior variants, which run at sizes of their own, keep
# one job per size (rule fit_size). The paths of the result files are the same, so aggregation is unchanged.

#: one job per seed (a {seed} wildcard), else one job for all seeds
FIT_PER_SEED = ONE_SEED_PER_JOB
#: one job per (main pre-training, method) for all sizes and seeds (with one job per seed it does not apply)
FIT_ALL_SIZES = config["workflow"]["sizes_per_job"] == "all" and not FIT_PER_SEED
#: what a fit job's log and benchmark paths name: its cell, and its seed when it has one
FIT_JOB = "{pretraining}/{method}/n{n}/seed{seed}" if FIT_PER_SEED else "{pretraining}/{method}/n{n}"


if FIT_ALL_SIZES:

    rule fit:
        wildcard_constraints:
            pretraining=MAIN_PRETRAININGS,
        input:
            unpack(fit_inputs),
        output:
            ["results/runs/{pretraining}/{method}/n%d/seed%d.json" % (n, s) for n in SIZES for s in SEEDS],
        params:
            data=canon(config["data"]),
            model=canon(config["model"]),
            train=lambda w: canon(relevant_hyper(w.method, config["train"])),
            seeds=SEEDS,
            sizes=SIZES,
        log:
            "results/logs/fit/{pretraining}/{method}.log",
        benchmark:
            "results/benchmarks/fit/{pretraining}/{method}.tsv"
        threads: config["threads"]
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/fit.py"


rule:
    name:
        "fit_size" if FIT_ALL_SIZES else "fit"
    wildcard_constraints:
        pretraining=VARIANT_NAMES if FIT_ALL_SIZES else ".+",
    input:
        unpack(fit_inputs),
    output:
        (
            r"results/runs/{pretraining}/{method}/n{n}/seed{seed,\d+}.json"
            if FIT_PER_SEED
            else ["results/runs/{pretraining}/{method}/n{n}/seed%d.json" % s for s in SEEDS]
        ),
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        seeds=(lambda w: [int(w.seed)]) if FIT_PER_SEED else SEEDS,
        sizes=lambda w: [int(w.n)],
    log:
        "results/logs/fit/%s.log" % FIT_JOB,
    benchmark:
        "results/benchmarks/fit/%s.tsv" % FIT_JOB
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fit.py"
