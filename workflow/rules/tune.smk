# Stage 3: select each method's hyper-parameters on held-out validation data, for every training size.


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
        tuning=canon({k: v for k, v in config["tuning"].items() if k in ("seed", "holdout_fraction", "metric")}),
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
