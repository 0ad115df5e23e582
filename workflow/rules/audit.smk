# Reproducibility audit: our tidy tables beside the paper's published numbers (cell by cell) and the paper's
# claims C1-C11 as paired tests over seeds, each with a verdict computed from the runs (bayes_transfer.audit.run:
# supported / contradicted / no relevant effect / inconclusive, rules in bayes_transfer.audit.stats).

#: tidy tables the audit reads when the config produces them (runs.csv always)
AUDIT_OPTIONAL_TABLES = {
    "ablation_rank": "results/tables/ablation_rank.csv",
    "ablation_lambda": "results/tables/ablation_lambda.csv",
    "ablation_learned_mean": "results/tables/ablation_learned_mean.csv",
    "landscape": "results/tables/landscape.csv",
    "segmentation": "results/tables/segmentation_runs.csv",
}

#: output name (bayes_transfer.audit.run.OUTPUTS) -> path
AUDIT_FILES = {
    "claims_csv": "results/audit/claims.csv",
    "claims_md": "results/audit/claims.md",
    "claims_html": "results/audit/claims.html",
    "overview_html": "results/audit/claims_overview.html",
    "parts_csv": "results/audit/claim_parts.csv",
    "pairs_csv": "results/audit/claim_pairs.csv",
    "strata_csv": "results/audit/claim_strata.csv",
    "cells_csv": "results/audit/cells.csv",
    "cells_md": "results/audit/cells.md",
    "cells_html": "results/audit/cells.html",
}


#: runs.csv, plus each optional table that this config's targets include (an ablation or segmentation switched
#: off in the config is simply absent, and the claims that need it say "no runs")
AUDIT_INPUTS = {"runs": "results/tables/runs.csv"} | {
    name: path
    for name, path in AUDIT_OPTIONAL_TABLES.items()
    if path in set(ablation_targets()) | set(segmentation_targets())
}
#: the controls' verdicts (workflow/rules/controls.smk), shown as the "Pipeline controls" table when they run
if CONTROLS_ENABLED:
    AUDIT_INPUTS["controls"] = CONTROLS_FILES["claims"]
#: other tiers' claims tables (audit.tiers: label -> claims.csv of another run), shown beside this tier's verdicts;
#: an entry for this config's own tier (inherited from config.yaml by an overlay) is skipped
OTHER_TIERS = {label: path for label, path in config["audit"]["tiers"].items() if label != TIER}
AUDIT_INPUTS |= {f"tier_{label}": path for label, path in OTHER_TIERS.items()}

# lambdas, not functions: rule files keep functions in common modules (snakemake --lint)
audit_targets = lambda: list(AUDIT_FILES.values())
audit_report = lambda name, caption, label: report(
    AUDIT_FILES[name],
    caption=f"../report/{caption}",
    category="Reproducibility audit",
    labels={"audit": label},
)


rule audit:
    input:
        **AUDIT_INPUTS,
    output:
        claims_csv=audit_report("claims_csv", "audit_claims.rst", "claims (CSV)"),
        claims_md=audit_report("claims_md", "audit_claims.rst", "claims (Markdown)"),
        claims_html=audit_report("claims_html", "audit_claims.rst", "claims"),
        overview_html=audit_report("overview_html", "audit_overview.rst", "claims overview"),
        parts_csv=audit_report("parts_csv", "audit_parts.rst", "claim parts (CSV)"),
        pairs_csv=audit_report("pairs_csv", "audit_pairs.rst", "pairs used (CSV)"),
        strata_csv=audit_report("strata_csv", "audit_strata.rst", "per-size tests (CSV)"),
        cells_csv=audit_report("cells_csv", "audit_cells.rst", "cells vs paper (CSV)"),
        cells_md=audit_report("cells_md", "audit_cells.rst", "cells vs paper (Markdown)"),
        cells_html=audit_report("cells_html", "audit_cells.rst", "cells vs paper"),
    params:
        audit=canon({k: v for k, v in config["audit"].items() if k != "tiers"}),
        tier=TIER,
        tiers=list(OTHER_TIERS),
    log:
        "results/logs/audit.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/audit.py"
