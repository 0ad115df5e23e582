# Stage 4: every method x training size x seed with the selected values; one result file per run.
#
# The job granularity is workflow.seeds_per_job (never a result: every seed's run is independent and writes the
# same file either way): `all` (the embedded default) fits every seed of a (pre-training, method, size) in one
# job, which pays the ~3 s start-up of a job once; `1` (configs/paper.yaml) makes each seed its own job, the
# cell a cluster runs side by side. The paths of the result files are the same, so aggregation is unchanged.

#: one job per seed (a {seed} wildcard), else one job for all seeds
FIT_PER_SEED = config["workflow"]["seeds_per_job"] == 1
#: what a fit job's log and benchmark paths name: its cell, and its seed when it has one
FIT_JOB = "{pretraining}/{method}/n{n}/seed{seed}" if FIT_PER_SEED else "{pretraining}/{method}/n{n}"


rule fit:
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
    log:
        "results/logs/fit/%s.log" % FIT_JOB,
    benchmark:
        "results/benchmarks/fit/%s.tsv" % FIT_JOB
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fit.py"
