# Segmentation with learned backbone priors (Tables 1, 15, 16): DeepLabv3+ whose backbone gets the prior.
#
# One job per table cell (dataset x paper backbone x pretraining x method) writes one result per seed;
# segmentation_tables merges them into results/tables/segmentation_runs.csv and the three tables.
# A backbone entry with arch null uses the main pipeline's model, checkpoints and priors (rules pretrain and
# learn_prior / import_prior); an entry with its own arch uses explicit `checkpoints` / `priors` files, or on the
# embedded default a stand-in pre-trained and given a SWAG prior here (segment_pretrain, segment_prior).


include: "segmentation_common.smk"


rule segment_pretrain:
    wildcard_constraints:
        backbone="resnet50|resnet101",
    output:
        "results/segmentation/pretrain/{backbone}/{pretraining}.pt",
    params:
        data=canon(config["data"]),
        model=lambda w: canon(seg_model(w.backbone)),
        pretrain=canon(config["pretrain"]),
    log:
        "results/logs/segmentation/pretrain/{backbone}/{pretraining}.log",
    benchmark:
        "results/benchmarks/segmentation/pretrain/{backbone}/{pretraining}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/segment_pretrain.py"


rule segment_prior:
    wildcard_constraints:
        backbone="resnet50|resnet101",
    input:
        checkpoint="results/segmentation/pretrain/{backbone}/{pretraining}.pt",
    output:
        "results/segmentation/priors/{backbone}/{pretraining}.pt",
    params:
        data=canon(config["data"]),
        model=lambda w: canon(seg_model(w.backbone)),
        swag=canon(config["swag"]),
    log:
        "results/logs/segmentation/prior/{backbone}/{pretraining}.log",
    benchmark:
        "results/benchmarks/segmentation/prior/{backbone}/{pretraining}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/segment_prior.py"


rule segment:
    wildcard_constraints:
        dataset="digit_scenes|voc2012|cityscapes",
        backbone="resnet50|resnet101",
        method="sgd_transfer|bnn_isotropic_prior|bnn_learned_prior|sgd_learned_prior",
    input:
        unpack(seg_inputs),
    output:
        [
            "results/segmentation/runs/{dataset}/{backbone}/{pretraining}/{method}/seed%d.json" % s
            for s in SEG["seeds"]
        ],
    params:
        dataset=lambda w: seg_dataset_cfg(w.dataset),
        digits=lambda w: seg_digits_cfg(w.dataset),
        model=canon(SEG["model"]),
        backbone_model=lambda w: canon(seg_model(w.backbone)),
        train=lambda w: canon(relevant_segmentation_hyper(w.method, SEG["train"])),
        seeds=SEG["seeds"],
    log:
        "results/logs/segmentation/{dataset}/{backbone}/{pretraining}/{method}.log",
    benchmark:
        "results/benchmarks/segmentation/{dataset}/{backbone}/{pretraining}/{method}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/segment.py"


rule segmentation_tables:
    input:
        [f for cell in seg_cells() for f in seg_run_paths(*cell)],
    output:
        tidy="results/tables/segmentation_runs.csv",
        table1_md=report(
            "results/tables/table1_segmentation.md",
            caption="../report/table1_segmentation.rst",
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 1 (SGLD)"},
        ),
        table1_tex="results/tables/table1_segmentation.tex",
        table15_md=report(
            "results/tables/table15_segmentation.md",
            caption="../report/table15_segmentation.rst",
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 15 (MAP, ResNet-50)"},
        ),
        table15_tex="results/tables/table15_segmentation.tex",
        table16_md=report(
            "results/tables/table16_segmentation.md",
            caption="../report/table16_segmentation.rst",
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 16 (MAP, ResNet-101)"},
        ),
        table16_tex="results/tables/table16_segmentation.tex",
    params:
        datasets=SEG["datasets"],
        backbones=SEG["backbones"],
    log:
        "results/logs/segmentation/tables.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/segment_tables.py"
