# Paths, targets and input functions of the ablation rules (ablation.smk).
#
# Fig. 3b/3d vary one hyper-parameter at ablations.n_train with every other value as tuned there;
# Fig. 3c reuses the tune/fit rules for the isotropic-around-the-mean methods; Fig. 3a is its own stage.

ABL = config["ablations"]
ABL_P = ABL["pretraining"]
ABL_N = ABL["n_train"]
RANK_METHODS = ABL["rank"]["methods"]
RANKS = ABL["rank"]["ranks"]
LAMBDA_METHODS = ABL["lambda"]["methods"]
PRIOR_SCALES = ABL["lambda"]["prior_scales"]
LAMBDA_CONVENTIONS = ABL["lambda"]["conventions"]
MEAN_METHODS = ABL["learned_mean"]["methods"]
LANDSCAPE = ABL["landscape"]
RELIABILITY_METHODS = ABL["reliability"]["methods"] or METHOD_LIST
#: the rank and lambda ablations' job granularity follows the fits' (workflow.seeds_per_job): one job per method
#: (and convention) for every value and seed, or, with one seed a job (paper scale), one job per (value, seed)
ABL_PER_SEED = ONE_SEED_PER_JOB

#: figure -> (metric, eval_set) of the figures drawn against training size from the summary
#: OOD detection against training size (issue 14; bayes_transfer.results.ood): the AUROC of the predictive entropy
#: for the near OOD set (the source classes' test images) and the far one (uniform noise), and of the mutual
#: information for the near one (methods with several samples only); embedded tiers with data.ood only
OOD_FIGURES = (
    {"ood_near": ("auroc_entropy", "ood_source"), "ood_far": ("auroc_entropy", "ood_noise"),
     "ood_near_mi": ("auroc_mi", "ood_source")}
    if not PAPER_SCALE and config["data"].get("ood", True)
    else {}
)
SIZE_FIGURES = {"fig4": ("error", "test"), "fig5a": ("error", "shifted_test"), "fig5b": ("nll", "test")} | OOD_FIGURES


def scale_label(scale):
    return f"{scale:g}"


#: the lambda ablation's path label of each prior scale -> the scale
SCALE_BY_LABEL = {scale_label(s): s for s in PRIOR_SCALES}


def ablation_paths(kind, pretraining, method, convention=None):
    """The result files of one method's rank ablation, or of its lambda ablation under one prior convention
    (results/ablations/lambda/<pretraining>/<method>/<convention>/lam<value>/seed<s>.json)."""
    if kind == "rank":
        values = [f"k{k}" for k in RANKS]
    else:
        values = [f"{convention}/lam{scale_label(s)}" for s in PRIOR_SCALES]
    return [f"results/ablations/{kind}/{pretraining}/{method}/{v}/seed{s}.json" for v in values for s in SEEDS]


def ablation_inputs(wildcards):
    inputs = {"checkpoint": checkpoint_path(wildcards.pretraining), "prior": prior_path(wildcards.pretraining)}
    tuning = tuning_path(wildcards.pretraining, wildcards.method, ABL_N)
    if tuning:
        inputs["tuning"] = tuning
    return inputs


def ablation_files(ablation):
    if ablation == "rank":
        return [f for m in RANK_METHODS for f in ablation_paths("rank", ABL_P, m)]
    if ablation == "lambda":
        return [f for m in LAMBDA_METHODS for c in LAMBDA_CONVENTIONS for f in ablation_paths("lambda", ABL_P, m, c)]
    return [f for m in MEAN_METHODS for n in SIZES for f in run_paths(ABL_P, m, n)]


def reliability_runs(wildcards):
    return [f for m in RELIABILITY_METHODS for f in run_paths(wildcards.pretraining, m, ABL_N)]


#: the Bayes-by-Backprop priors whose SNR-pruning curve is drawn (issue 14; prior.variants with method bbb, or the
#: pre-trainings' own priors when prior.method is bbb), embedded tiers only (a source test set is needed)
PRUNED_PRIORS = (
    []
    if PAPER_SCALE
    else [v for v in PRIOR_VARIANTS if prior_method(v) == "bbb"]
    + (list(PRETRAININGS) if config["prior"]["method"] == "bbb" else [])
)


def vi_run_files():
    """The run files of every variational fit (main methods and prior variants): their SNR-pruning curves."""
    cells = [(p, m, n) for p in PRETRAININGS for m in METHOD_LIST for n in SIZES] + variant_cells()
    return [f for p, m, n in cells if METHODS[m].variational for f in run_paths(p, m, n)]


def ablation_targets():
    targets = [f"results/figures/pruning_{v}.{ext}" for v in PRUNED_PRIORS for ext in ("png", "csv")]
    if vi_run_files():
        targets += [f"results/figures/pruning_vi_fits.{ext}" for ext in ("png", "csv")]
    for p in PRETRAININGS:
        targets += [f"results/figures/{fig}_{p}.{ext}" for fig in SIZE_FIGURES for ext in ("png", "csv")]
        if ABL_N in SIZES:
            targets += [f"results/figures/fig9_reliability_{p}.{ext}" for ext in ("png", "csv")]
        targets += [f"results/tables/ece_{p}.md", f"results/tables/ece_{p}.csv"]
    if RANK_METHODS:
        targets += ["results/tables/ablation_rank.csv", "results/figures/fig3b_rank.png",
                    "results/figures/fig3b_rank.csv"]
    if LAMBDA_METHODS:
        targets += ["results/tables/ablation_lambda.csv", "results/figures/fig3d_lambda.png",
                    "results/figures/fig3d_lambda.csv"]
    if MEAN_METHODS:
        targets += ["results/tables/ablation_learned_mean.csv", "results/figures/fig3c_learned_mean.png",
                    "results/figures/fig3c_learned_mean.csv"]
    if LANDSCAPE["enabled"]:
        targets += ["results/tables/landscape.csv", "results/figures/fig3a_landscape.png",
                    "results/figures/fig3a_landscape.csv"]
    return targets


