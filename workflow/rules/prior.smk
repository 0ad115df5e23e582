# Stage 2: the learned prior (SWAG or Bayes by Backprop over the feature extractor on the source loss), a reusable
# artifact.
#
# prior.source swag (always for the digits): learned here; at paper scale on ImageNet's training set. prior.method:
# swag (settings `swag`) or bbb (BYOV's Bayes by Backprop, settings `bbb`: a diagonal rank-0 prior, same file format).
# prior.variants: extra priors results/priors/<pretraining>_<method>.pt learned from the pre-training's checkpoint.
# prior.source priorbox (paper scale): the authors' released prior files imported (rule import_prior).
# rule prior_diagnostics: every prior's stationarity diagnostic (from its metadata) as a table for the report;
# a drift-dominated learned prior is also a WARNING in its job log.

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
            checkpoint=lambda w: checkpoint_path(w.pretraining),
        output:
            "results/priors/{pretraining}.pt",
        params:
            data=canon(config["data"]),
            model=canon(config["model"]),
            swag=canon(config["swag"]),
            source=lambda w: source_pretraining(w.pretraining),
            method=lambda w: prior_method(w.pretraining),
            bbb=lambda w: canon(config["bbb"]) if prior_method(w.pretraining) == "bbb" else {},
        log:
            "results/logs/prior/{pretraining}.log",
        benchmark:
            "results/benchmarks/prior/{pretraining}.tsv"
        threads: max(config["threads"], 2)
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/learn_prior.py"


rule prior_diagnostics:
    input:
        [prior_path(p) for p in PRETRAININGS],
    output:
        csv="results/tables/prior_diagnostics.csv",
        html=report("results/tables/prior_diagnostics.html", caption="../report/prior_diagnostics.rst",
                    category="Learned priors", labels={"table": "stationarity diagnostics"}),
    params:
        # the caption's text (as aggregate.smk's caption_param, defined after this file is read)
        caption=lambda wildcards, text=(
            Path(workflow.basedir) / "workflow" / "report" / "prior_diagnostics.rst"
        ).read_text(): text,
    log:
        "results/logs/prior/diagnostics.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prior_diagnostics.py"
