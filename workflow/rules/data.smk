# Paper scale, before any training: the dataset files checked (or downloaded by torchvision) and the source
# checkpoints fetched. Requested only by the paper-scale pretrain rule (the digits are bundled), so the embedded
# default never runs them. No benchmark: on a cluster both run on the submitting node, which has internet access.

from bayes_transfer.data.registry import is_embedded

# the embedded datasets (digits, fashion_mnist) train their own checkpoints and priors here
PAPER_SCALE = not is_embedded(config["data"]["dataset"])


rule prepare_data:
    wildcard_constraints:
        dataset="cifar10|cifar100|flowers102|oxford_pets",
    output:
        "results/data/{dataset}.json",
    params:
        data=canon({k: config["data"][k] for k in ("root", "shifted_test", "download")}),
    log:
        "results/logs/data/{dataset}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prepare_data.py"


rule fetch_weights:
    wildcard_constraints:
        arch="resnet18|resnet50|resnet101",
    output:
        "results/weights/{arch}_{pretraining}.json",
    params:
        checkpoints=canon(config["checkpoints"]),
        root=config["data"]["root"],
    log:
        "results/logs/weights/{arch}_{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fetch_weights.py"
