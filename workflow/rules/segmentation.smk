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
        (
            r"results/segmentation/runs/{dataset}/{backbone}/{pretraining}/{method}/seed{seed,\d+}.json"
            if SEG_PER_SEED
            else [
                "results/segmentation/runs/{dataset}/{backbone}/{pretraining}/{method}/seed%d.json" % s
                for s in SEG["seeds"]
            ]
        ),
    params:
        dataset=lambda w: seg_dataset_cfg(w.dataset),
        digits=lambda w: seg_digits_cfg(w.dataset),
        model=canon(SEG["model"]),
        backbone_model=lambda w: canon(seg_model(w.backbone)),
        train=lambda w: canon(relevant_hyper(w.method, SEG["train"], SegmentationHyper)),
        seeds=(lambda w: [int(w.seed)]) if SEG_PER_SEED else SEG["seeds"],
    log:
        "results/logs/segmentation/%s.log" % SEG_JOB,
    benchmark:
        "results/benchmarks/segmentation/%s.tsv" % SEG_JOB
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
        tidy_html=report(
            "results/tables/segmentation_runs.html",
            caption=caption_rst("segmentation_runs"),
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "every run"},
        ),
        table1_md="results/tables/table1_segmentation.md",
        table1_tex="results/tables/table1_segmentation.tex",
        table1_html=report(
            "results/tables/table1_segmentation.html",
            caption=caption_rst("table1_segmentation"),
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 1 (SGLD)"},
        ),
        table15_md="results/tables/table15_segmentation.md",
        table15_tex="results/tables/table15_segmentation.tex",
        table15_html=report(
            "results/tables/table15_segmentation.html",
            caption=caption_rst("table15_segmentation"),
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 15 (MAP, ResNet-50)"},
        ),
        table16_md="results/tables/table16_segmentation.md",
        table16_tex="results/tables/table16_segmentation.tex",
        table16_html=report(
            "results/tables/table16_segmentation.html",
            caption=caption_rst("table16_segmentation"),
            category="Segmentation (Tables 1, 15, 16)",
            labels={"table": "Table 16 (MAP, ResNet-101)"},
        ),
    params:
        captions=captions_param(table1="table1_segmentation", table15="table15_segmentation",
                                table16="table16_segmentation", runs="segmentation_runs"),
        datasets=SEG["datasets"],
        backbones=SEG["backbones"],
    log:
        "results/logs/segmentation/tables.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/segment_tables.py"
