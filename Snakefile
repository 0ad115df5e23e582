# Reproduction of "Pre-Train Your Loss" (Shwartz-Ziv et al., NeurIPS 2022): `snakemake --cores 2`.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/prior.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/ablation_common.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/controls.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/sweep.smk"


rule all:
    input:
        all_targets(),
    default_target: True
