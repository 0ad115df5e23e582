# Config preparation, wildcard constraints and input functions shared by every rule.
#
# The config (config.yaml, then --configfile files, then --config values) is typed, validated against
# workflow/schemas/config.schema.yaml with its defaults, completed with the settings that follow other lists,
# and checked (bayes_transfer.config.schema.prepare_config); every problem is reported on its own line.
from pathlib import Path

from bayes_transfer.audit.tiers import tier_label
from bayes_transfer.config.check import ConfigError
from bayes_transfer.config.schema import prepare_config
from bayes_transfer.inference.methods import METHODS, relevant_hyper


try:
    prepare_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
except ConfigError as err:
    raise WorkflowError(f"invalid config ({len(err.problems)} problem(s)):\n" + "\n".join(err.problems))

PRETRAININGS = config["pretrainings"]
METHOD_LIST = config["methods"]
SIZES = config["sizes"]
SEEDS = config["seeds"]
GRIDS = config["tuning"]["grids"]
INHERIT = config["tuning"]["inherit"]
#: workflow.seeds_per_job 1 (paper scale): every fit, rank/lambda ablation and segmentation cell is one job per
#: seed (fit.smk, ablation.smk, segmentation.smk); else one job covers its seeds
ONE_SEED_PER_JOB = config["workflow"]["seeds_per_job"] == 1
#: this config's tier (default, fashion, paper scale), named on the audit's front page
TIER = tier_label(config["data"]["dataset"])
#: prior.variants (issue 14) by their results name <pretraining>_<method>: extra priors and the methods run with
#: them, for the pre-trainings in `pretrainings` (an override of the list drops the others' variants too)
PRIOR_VARIANTS = {
    f"{v['pretraining']}_{v['method']}": v for v in config["prior"]["variants"] if v["pretraining"] in PRETRAININGS
}


wildcard_constraints:
    pretraining="|".join(["supervised", "simclr", "byol", *PRIOR_VARIANTS]),
    method="|".join(METHODS),
    n=r"\d+",


def canon(obj):
    """A config slice with keys sorted at every level: params compare equal whatever the YAML key order."""
    if isinstance(obj, dict):
        return {k: canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canon(v) for v in obj]
    return obj


def source_pretraining(pretraining):
    """The pre-training whose checkpoint ``pretraining`` (a pre-training or a prior variant) uses."""
    return PRIOR_VARIANTS[pretraining]["pretraining"] if pretraining in PRIOR_VARIANTS else pretraining


def prior_method(pretraining):
    """How the prior of ``pretraining`` (a pre-training or a prior variant) is learned: swag or bbb."""
    return PRIOR_VARIANTS[pretraining]["method"] if pretraining in PRIOR_VARIANTS else config["prior"]["method"]


def checkpoint_path(pretraining):
    return f"results/pretrain/{source_pretraining(pretraining)}.pt"


def prior_path(pretraining):
    if pretraining in PRIOR_VARIANTS and prior_method(pretraining) == config["prior"]["method"]:
        return prior_path(source_pretraining(pretraining))  # the pre-training's own prior, learned once
    return f"results/priors/{pretraining}.pt"


def uses_learned_prior(method):
    return METHODS[method].prior == "learned"


def tuned_method(method):
    """The method whose grid selects ``method``'s values (itself unless inherited); None: no tuning."""
    source = INHERIT.get(method, method)
    return source if GRIDS.get(source) else None


def tuning_path(pretraining, method, n):
    source = tuned_method(method)
    return f"results/tuning/{pretraining}/{source}/n{n}.json" if source else None


def run_paths(pretraining, method, n):
    return [f"results/runs/{pretraining}/{method}/n{n}/seed{s}.json" for s in SEEDS]


def tune_inputs(wildcards):
    inputs = {"checkpoint": checkpoint_path(wildcards.pretraining)}
    if uses_learned_prior(wildcards.method):
        inputs["prior"] = prior_path(wildcards.pretraining)
    return inputs


def fit_inputs(wildcards):
    """A fit job's inputs: the checkpoint, the prior if the method uses one, and the tuning file of its size
    (wildcard n), or of every size when the job has no n (workflow.sizes_per_job: all)."""
    inputs = {"checkpoint": checkpoint_path(wildcards.pretraining)}
    if uses_learned_prior(wildcards.method):
        inputs["prior"] = prior_path(wildcards.pretraining)
    one = hasattr(wildcards, "n")
    tunings = [tuning_path(wildcards.pretraining, wildcards.method, n) for n in ([wildcards.n] if one else SIZES)]
    if all(tunings):
        inputs["tuning"] = tunings[0] if one else tunings
    return inputs


def variant_cells():
    """(variant, method, n) of every run of the prior variants."""
    return [(name, m, n) for name, v in PRIOR_VARIANTS.items() for m in v["methods"] for n in variant_sizes(name)]


def variant_sizes(variant):
    """The sizes a prior variant runs at: its own among `sizes` (all of `sizes` when it sets none)."""
    return [n for n in SIZES if n in (PRIOR_VARIANTS[variant]["sizes"] or SIZES)]


def all_run_files():
    return [f for p in PRETRAININGS for m in METHOD_LIST for n in SIZES for f in run_paths(p, m, n)] + [
        f for cell in variant_cells() for f in run_paths(*cell)]


def all_targets():
    return [
        f"results/tables/runs.csv",
        "results/tables/prior_diagnostics.csv",
        *[f"results/tables/table_{p}.md" for p in PRETRAININGS],
        *[f"results/tables/table_{p}.tex" for p in PRETRAININGS],
        *([f"results/tables/table14_shifted_{p}.md" for p in PRETRAININGS]),
        *ablation_targets(),
        *segmentation_targets(),
        *audit_targets(),
        *tuning_flag_targets(),
        *sweep_targets(),
    ]
