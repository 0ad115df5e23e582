# Stage 1: the source checkpoint of each pre-training (supervised cross-entropy; SimCLR).


rule pretrain:
    output:
        "results/pretrain/{pretraining}.pt",
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        pretrain=canon(config["pretrain"]),
    log:
        "results/logs/pretrain/{pretraining}.log",
    benchmark:
        "results/benchmarks/pretrain/{pretraining}.tsv"
    threads: max(config["threads"], 2)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/pretrain.py"
