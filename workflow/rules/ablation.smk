# Ablations and uncertainty evidence: Figs. 3a-d (one pre-training's prior), Figs. 5a/5b/8 and 9 (main runs).
# Fig. 3b/3d sweep one hyper-parameter at ablations.n_train with every other value as tuned there;
# Fig. 3c reuses the tune/fit rules for the isotropic-around-the-mean methods; Fig. 3a is its own stage.
# Paths and input functions: ablation_common.smk.


wildcard_constraints:
    figure="|".join(SIZE_FIGURES),
    ablation="rank|lambda|learned_mean",


rule sweep_rank:
    input:
        unpack(sweep_inputs),
    output:
        sweep_paths("rank", "{pretraining}", "{method}"),
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        key="prior_rank",
        values=RANKS,
        fixed={"prior_truncation": ABL["rank"]["truncation"]},
        n=ABL_N,
        seeds=SEEDS,
    log:
        "results/logs/ablations/rank/{pretraining}/{method}.log",
    benchmark:
        "results/benchmarks/ablations/rank/{pretraining}/{method}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/sweep.py"


rule sweep_lambda:
    input:
        unpack(sweep_inputs),
    output:
        sweep_paths("lambda", "{pretraining}", "{method}"),
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        key="prior_scale",
        values=SCALES,
        fixed={},
        n=ABL_N,
        seeds=SEEDS,
    log:
        "results/logs/ablations/lambda/{pretraining}/{method}.log",
    benchmark:
        "results/benchmarks/ablations/lambda/{pretraining}/{method}.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/sweep.py"


rule ablation_table:
    input:
        lambda w: ablation_files(w.ablation),
    output:
        tidy="results/tables/ablation_{ablation}.csv",
    log:
        "results/logs/ablations/table_{ablation}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/ablation_table.py"


rule landscape:
    input:
        checkpoint=checkpoint_path(ABL_P),
        prior=prior_path(ABL_P),
    output:
        "results/tables/landscape.csv",
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        landscape=canon({k: v for k, v in LANDSCAPE.items() if k != "enabled"}),
        pretraining=ABL_P,
        seeds=SEEDS,
    log:
        "results/logs/ablations/landscape.log",
    benchmark:
        "results/benchmarks/ablations/landscape.tsv"
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/landscape.py"


rule figure_landscape:
    input:
        "results/tables/landscape.csv",
    output:
        png=report("results/figures/fig3a_landscape.png", caption="../report/fig3a.rst",
                   category="Ablations (Fig. 3)", labels={"figure": "3a loss along prior directions"}),
        csv="results/figures/fig3a_landscape.csv",
    params:
        pretraining=ABL_P,
    log:
        "results/logs/figures/fig3a.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_ablation.py"


rule figure_rank:
    input:
        "results/tables/ablation_rank.csv",
    output:
        png=report("results/figures/fig3b_rank.png", caption="../report/fig3b.rst",
                   category="Ablations (Fig. 3)", labels={"figure": "3b rank"}),
        csv="results/figures/fig3b_rank.csv",
    params:
        pretraining=ABL_P,
        n=ABL_N,
        truncation=ABL["rank"]["truncation"],
    log:
        "results/logs/figures/fig3b.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_ablation.py"


rule figure_lambda:
    input:
        "results/tables/ablation_lambda.csv",
    output:
        png=report("results/figures/fig3d_lambda.png", caption="../report/fig3d.rst",
                   category="Ablations (Fig. 3)", labels={"figure": "3d rescaling"}),
        csv="results/figures/fig3d_lambda.csv",
    params:
        pretraining=ABL_P,
        n=ABL_N,
        convention=config["train"]["prior_convention"],
    log:
        "results/logs/figures/fig3d.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_ablation.py"


rule figure_learned_mean:
    input:
        mean="results/tables/ablation_learned_mean.csv",
        runs="results/tables/runs.csv",
    output:
        png=report("results/figures/fig3c_learned_mean.png", caption="../report/fig3c.rst",
                   category="Ablations (Fig. 3)", labels={"figure": "3c learned covariance vs learned mean"}),
        csv="results/figures/fig3c_learned_mean.csv",
    params:
        pretraining=ABL_P,
    log:
        "results/logs/figures/fig3c.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_ablation.py"


rule figure_vs_size:
    input:
        summary="results/tables/summary.csv",
    output:
        png=report("results/figures/{figure}_{pretraining}.png", caption="../report/size_figure.rst",
                   category="Data-size curves (Figs. 4, 5a, 5b/8)",
                   labels={"figure": "{figure}", "pretraining": "{pretraining}"}),
        csv="results/figures/{figure}_{pretraining}.csv",
    params:
        methods=METHOD_LIST,
        metric=lambda w: SIZE_FIGURES[w.figure][0],
        eval_set=lambda w: SIZE_FIGURES[w.figure][1],
    log:
        "results/logs/figures/{figure}_{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_vs_size.py"


rule figure_reliability:
    input:
        runs=reliability_runs,
        summary="results/tables/summary.csv",
    output:
        png=report("results/figures/fig9_reliability_{pretraining}.png", caption="../report/fig9.rst",
                   category="Calibration (Fig. 9)", labels={"figure": "9 reliability", "pretraining": "{pretraining}"}),
        csv="results/figures/fig9_reliability_{pretraining}.csv",
    params:
        methods=RELIABILITY_METHODS,
        n=ABL_N,
        seeds=SEEDS,
    log:
        "results/logs/figures/fig9_{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_reliability.py"


rule table_ece:
    input:
        summary="results/tables/summary.csv",
    output:
        md=report("results/tables/ece_{pretraining}.md", caption="../report/ece.rst",
                  category="Calibration (Fig. 9)", labels={"table": "ECE", "pretraining": "{pretraining}"}),
        csv="results/tables/ece_{pretraining}.csv",
    params:
        methods=METHOD_LIST,
    log:
        "results/logs/tables/ece_{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_ece.py"
