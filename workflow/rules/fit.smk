# Stage 4: every method x training size x seed with the selected values; one result file per run.


rule fit:
    input:
        unpack(fit_inputs),
    output:
        ["results/runs/{pretraining}/{method}/n{n}/seed%d.json" % s for s in SEEDS],
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        seeds=SEEDS,
    log:
        "results/logs/fit/{pretraining}/{method}/n{n}.log",
    benchmark:
        "results/benchmarks/fit/{pretraining}/{method}/n{n}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fit.py"
