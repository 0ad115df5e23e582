# The pipeline's positive and negative controls (docs/controls.md): a synthetic transfer task whose learned prior
# carries the information the downstream data lack (positive) or none of it (negative), run through the library's
# own stages (pre-train, SWAG, tune, fit) with this config's pretrain, swag, train, tuning and grids, and judged by
# the audit's own C3, C4 and C10 (bayes_transfer.controls). One job on one core; the audit shows its verdicts
# (the "Pipeline controls" table of claims.md / claims.html and the report's front page).
from bayes_transfer.controls.config import control_params, control_runtime_min

CONTROLS_ENABLED = config["controls"]["enabled"]

#: output name -> path (bayes_transfer.controls.standalone.run_controls writes them)
CONTROLS_FILES = {
    "claims": "results/controls/claims.csv",
    "parts": "results/controls/parts.csv",
    "summary": "results/controls/controls.json",
    **{f"runs_{v}": f"results/controls/runs_{v}.csv" for v in config["controls"]["variants"]},
}
# no target of its own: the audit rule takes CONTROLS_FILES["claims"] as input when the controls are enabled


if CONTROLS_ENABLED:

    rule controls:
        output:
            **CONTROLS_FILES,
        params:
            settings=canon(control_params(config)),
            variants=config["controls"]["variants"],
        log:
            "results/logs/controls.log",
        benchmark:
            "results/benchmarks/controls.tsv"
        threads: 1
        resources:
            # a cluster's time limit (minutes): ~60 for the default, ~13 h for configs/paper.yaml's 30,000-step fits
            runtime=control_runtime_min(control_params(config), len(config["controls"]["variants"])),
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/controls.py"
