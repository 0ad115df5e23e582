"""Glue: the tidy tables this config produced -> the reproducibility audit (per-cell table, claims, controls)."""

from bayes_transfer.audit.extract import TABLE_FILES
from bayes_transfer.audit.paper_effects import power_hook
from bayes_transfer.audit.run import read_controls, read_tables, run_audit, write_audit
from bayes_transfer.audit.settings import AuditSettings
from bayes_transfer.audit.tiers import read_tier_verdicts
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], "audit") as log:
    settings = AuditSettings.from_config(snakemake.params.audit)
    inputs = dict(snakemake.input.items())
    tables = read_tables({name: inputs.get(name) for name in TABLE_FILES})
    log.info("tables: %s", {k: (None if v is None else len(v)) for k, v in tables.items()})
    # the pipeline's positive and negative controls (results/controls/claims.csv) when the config runs them
    # other tiers' verdicts (audit.tiers), shown beside this tier's with the published reproductions'
    others = {label: read_tier_verdicts(label, inputs[f"tier_{label}"]) for label in snakemake.params.tiers}
    result = run_audit(tables, settings, power=power_hook(), controls=read_controls(inputs.get("controls")),
                       tier=snakemake.params.tier, other_tiers=others)
    write_audit(result, dict(snakemake.output.items()), settings)
    for row in result["claims"].itertuples():
        log.info("%s: %s", row.claim, row.verdict)
