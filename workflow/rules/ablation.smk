# Ablations and uncertainty evidence: Figs. 3a-d (one pre-training's prior), Figs. 5a/5b/8 and 9 (main runs).
# Fig. 3b/3d vary one hyper-parameter at ablations.n_train with every other value as tuned there;
# Fig. 3c reuses the tune/fit rules for the isotropic-around-the-mean methods; Fig. 3a is its own stage.
# Paths and input functions: ablation_common.smk.


import re


wildcard_constraints:
    figure="|".join(SIZE_FIGURES),
    ablation="rank|lambda|learned_mean",
    convention="exact|priorbox",


#: a rank or lambda ablation job's cell in its log and benchmark paths: its value and seed with one seed a job
ABL_RANK_JOB = "{pretraining}/{method}/k{rank}/seed{seed}" if ABL_PER_SEED else "{pretraining}/{method}"
ABL_LAMBDA_JOB = ("{pretraining}/{method}/{convention}/lam{lam}/seed{seed}" if ABL_PER_SEED
                  else "{pretraining}/{method}/{convention}")


# one job per method for every rank and seed; with workflow.seeds_per_job 1 (paper scale) one job per (rank, seed)
rule ablation_rank:
    wildcard_constraints:
        rank=r"\d+",
        seed=r"\d+",
    input:
        unpack(ablation_inputs),
    output:
        (
            "results/ablations/rank/{pretraining}/{method}/k{rank}/seed{seed}.json"
            if ABL_PER_SEED
            else ablation_paths("rank", "{pretraining}", "{method}")
        ),
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        key="prior_rank",
        values=(lambda w: [int(w.rank)]) if ABL_PER_SEED else RANKS,
        fixed={"prior_truncation": ABL["rank"]["truncation"]},
        n=ABL_N,
        seeds=(lambda w: [int(w.seed)]) if ABL_PER_SEED else SEEDS,
    log:
        "results/logs/ablations/rank/%s.log" % ABL_RANK_JOB,
    benchmark:
        "results/benchmarks/ablations/rank/%s.tsv" % ABL_RANK_JOB
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/ablation.py"


# one job per method and prior convention (ablations.lambda.conventions; the settings of each:
# bayes_transfer.stages.ablation.LAMBDA_CONVENTIONS) for every lambda and seed; with workflow.seeds_per_job 1 one
# job per (lambda, seed)
rule ablation_lambda:
    wildcard_constraints:
        lam="|".join(re.escape(label) for label in SCALE_BY_LABEL) or "none",
        seed=r"\d+",
    input:
        unpack(ablation_inputs),
    output:
        (
            "results/ablations/lambda/{pretraining}/{method}/{convention}/lam{lam}/seed{seed}.json"
            if ABL_PER_SEED
            else ablation_paths("lambda", "{pretraining}", "{method}", "{convention}")
        ),
    params:
        data=canon(config["data"]),
        model=canon(config["model"]),
        train=lambda w: canon(relevant_hyper(w.method, config["train"])),
        key="prior_scale",
        values=(lambda w: [SCALE_BY_LABEL[w.lam]]) if ABL_PER_SEED else PRIOR_SCALES,
        fixed={},
        n=ABL_N,
        seeds=(lambda w: [int(w.seed)]) if ABL_PER_SEED else SEEDS,
    log:
        "results/logs/ablations/lambda/%s.log" % ABL_LAMBDA_JOB,
    benchmark:
        "results/benchmarks/ablations/lambda/%s.tsv" % ABL_LAMBDA_JOB
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/ablation.py"


rule ablation_table:
    input:
        lambda w: ablation_files(w.ablation),
    output:
        tidy="results/tables/ablation_{ablation}.csv",
        html=report("results/tables/ablation_{ablation}.html", caption=caption_rst("ablation_table"),
                    category="Ablations (Fig. 3)", subcategory="Tables: every run",
                    labels={"table": "{ablation} runs"}),
    params:
        caption=caption_param("ablation_table"),
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
        png="results/figures/fig3a_landscape.png",
        csv="results/figures/fig3a_landscape.csv",
        html=report("results/figures/fig3a_landscape.html", caption=caption_rst("fig3a"),
                    category="Ablations (Fig. 3)", subcategory="Figures",
                    labels={"figure": "3a loss along prior directions"}),
    params:
        caption=caption_param("fig3a"),
        pretraining=ABL_P,
    log:
        "results/logs/figures/fig3a.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_landscape.py"


rule figure_rank:
    input:
        "results/tables/ablation_rank.csv",
    output:
        png="results/figures/fig3b_rank.png",
        csv="results/figures/fig3b_rank.csv",
        html=report("results/figures/fig3b_rank.html", caption=caption_rst("fig3b"),
                    category="Ablations (Fig. 3)", subcategory="Figures", labels={"figure": "3b rank"}),
    params:
        caption=caption_param("fig3b"),
        key="prior_rank",
        logx=False,
        xlabel="rank k of the low-rank part (0 = diagonal)",
        title=f"{ABL_P} prior, n={ABL_N}, {ABL['rank']['truncation']} truncation (± 1 SE)",
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
        png="results/figures/fig3d_lambda.png",
        csv="results/figures/fig3d_lambda.csv",
        html=report("results/figures/fig3d_lambda.html", caption=caption_rst("fig3d"),
                    category="Ablations (Fig. 3)", subcategory="Figures", labels={"figure": "3d rescaling"}),
    params:
        caption=caption_param("fig3d"),
        key="prior_scale",
        logx=True,
        xlabel="prior rescaling λ",
        title=f"{ABL_P} prior, n={ABL_N}, {' vs '.join(LAMBDA_CONVENTIONS)} convention (± 1 SE)",
        style_by="prior_convention",
        style_order=["exact", "priorbox"],
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
        png="results/figures/fig3c_learned_mean.png",
        csv="results/figures/fig3c_learned_mean.csv",
        html=report("results/figures/fig3c_learned_mean.html", caption=caption_rst("fig3c"),
                    category="Ablations (Fig. 3)", subcategory="Figures",
                    labels={"figure": "3c learned covariance vs learned mean"}),
    params:
        caption=caption_param("fig3c"),
        pretraining=ABL_P,
    log:
        "results/logs/figures/fig3c.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/figure_learned_mean.py"


rule figure_vs_size:
    input:
        summary="results/tables/summary.csv",
    output:
        png="results/figures/{figure}_{pretraining}.png",
        csv="results/figures/{figure}_{pretraining}.csv",
        html=report("results/figures/{figure}_{pretraining}.html", caption=caption_rst("size_figure"),
                    category="Data-size curves (Figs. 4, 5a, 5b/8)",
                    labels={"figure": "{figure}", "pretraining": "{pretraining}"}),
    params:
        caption=caption_param("size_figure"),
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
        png="results/figures/fig9_reliability_{pretraining}.png",
        csv="results/figures/fig9_reliability_{pretraining}.csv",
        html=report("results/figures/fig9_reliability_{pretraining}.html", caption=caption_rst("fig9"),
                    category="Calibration (Fig. 9)",
                    labels={"figure": "9 reliability", "pretraining": "{pretraining}"}),
    params:
        caption=caption_param("fig9"),
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
        md="results/tables/ece_{pretraining}.md",
        csv="results/tables/ece_{pretraining}.csv",
        html=report("results/tables/ece_{pretraining}.html", caption=caption_rst("ece"),
                    category="Calibration (Fig. 9)", labels={"table": "ECE", "pretraining": "{pretraining}"}),
    params:
        caption=caption_param("ece"),
        methods=METHOD_LIST,
    log:
        "results/logs/tables/ece_{pretraining}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_ece.py"


rule pruning:
    input:
        prior=lambda w: prior_path(w.variant),
        checkpoint=lambda w: checkpoint_path(w.variant),
    output:
        png="results/figures/pruning_{variant}.png",
        csv="results/figures/pruning_{variant}.csv",
        html=report("results/figures/pruning_{variant}.html", caption=caption_rst("pruning"),
                    category="Related methods (issue 14)", labels={"figure": "SNR pruning {variant}"}),
    params:
        caption=caption_param("pruning"),
        data=canon(config["data"]),
        model=canon(config["model"]),
    log:
        "results/logs/figures/pruning_{variant}.log",
    threads: config["threads"]
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/pruning.py"


rule pruning_fits:
    input:
        vi_run_files(),
    output:
        png="results/figures/pruning_vi_fits.png",
        csv="results/figures/pruning_vi_fits.csv",
        html=report("results/figures/pruning_vi_fits.html", caption=caption_rst("pruning_fits"),
                    category="Related methods (issue 14)", labels={"figure": "SNR pruning of the VI fits"}),
    params:
        caption=caption_param("pruning_fits"),
    log:
        "results/logs/figures/pruning_vi_fits.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/pruning_fits.py"
