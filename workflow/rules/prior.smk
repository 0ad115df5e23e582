# Stage 2: the learned prior (SWAG over the feature extractor on the source loss), a reusable artifact.


rule learn_prior:
    input:
        checkpoint="results/pretrain/{pretraining}.pt",
    output:
        "results/priors/{pretraining}.pt",
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        swag=canon(config["swag"]),
    log:
        "results/logs/prior/{pretraining}.log",
    benchmark:
        "results/benchmarks/prior/{pretraining}.tsv"
    threads: max(config["threads"], 2)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/learn_prior.py"
