# Stage 2: the learned prior (SWAG over the feature extractor on the source loss), a reusable artifact.
#
# prior.source swag (always for the digits): learned here; at paper scale on ImageNet's training set.
# prior.source priorbox (paper scale): the authors' released prior files imported (rule import_prior).

if PAPER_SCALE and config["prior"]["source"] == "priorbox":

    rule import_prior:
        input:
            checkpoint="results/pretrain/{pretraining}.pt",
        output:
            "results/priors/{pretraining}.pt",
        params:
            prefix=lambda w: config["prior"]["priorbox_prefix"].format(
                root=config["data"]["root"], arch=config["model"]["arch"], pretraining=w.pretraining
            ),
            model=canon(config["model"]),
        log:
            "results/logs/prior/{pretraining}.log",
        benchmark:
            "results/benchmarks/prior/{pretraining}.tsv"
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/import_prior.py"

else:

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
