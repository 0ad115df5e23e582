# Paper scale: the further experiments of `sweep.experiments`, each an instance of this same workflow.
#
# An experiment's config is the top-level config with the experiment's keys replaced (dicts merged key by key),
# with the Fig. 3 ablations switched off (bayes_transfer.config.experiments); it is prepared like the top level
# (bayes_transfer.config.schema) when its instance is parsed, and keeps the settings the top level derived from
# its lists (ablations.n_train, ...).
# Its rules are this workflow's rules renamed "<experiment>_<rule>", writing under results/<experiment>/.
# Sizes, batch sizes and grids can differ per experiment, which a {dataset} wildcard in one set of rules
# could not express (tune writes one file per size). Without `sweep` nothing here defines a rule.
from bayes_transfer.config.experiments import sweep_experiments

SWEEP = sweep_experiments(config)


for experiment in SWEEP:

    module:
        name: experiment
        snakefile: str(Path(workflow.basedir) / "Snakefile")
        config: SWEEP[experiment]
        replace_prefix: {"results/": f"results/{experiment}/"}

    experiment_ = f"{experiment}_"

    use rule * from experiment as experiment_*


def sweep_targets():
    """The final outputs of every experiment of the sweep (the inputs of its renamed rule all)."""
    return [f for name in SWEEP for f in getattr(rules, f"{name}_all").input]


# Aggregation, tables, figures and the data/weights preparation have no benchmark: on a cluster they run on
# the submitting node (which also has the internet access that downloads need); every compute rule is a job.
workflow.localrules(*[r.name for r in workflow.rules if not r.benchmark])
