# Stage 1: the source checkpoint of each pre-training (supervised cross-entropy; SimCLR; BYOL, embedded tiers only).
#
# Embedded default: trained here from scratch on the source digits. Paper scale: the ImageNet checkpoint
# (torchvision's supervised weights, or a converted SimCLR file) fetched by rule fetch_weights and written in the
# same format, after the downstream dataset has been checked (rule prepare_data).

if PAPER_SCALE:

    rule pretrain:
        input:
            weights=lambda w: f"results/weights/{config['model']['arch']}_{w.pretraining}.json",
            data=f"results/data/{config['data']['dataset']}.json",
        output:
            "results/pretrain/{pretraining}.pt",
        params:
            model=canon(config["model"]),
        log:
            "results/logs/pretrain/{pretraining}.log",
        benchmark:
            "results/benchmarks/pretrain/{pretraining}.tsv"
        threads: 1
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/convert_checkpoint.py"

else:

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
