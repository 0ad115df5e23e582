"""Glue: the tidy tables this config produced -> the reproducibility audit (per-cell table and claims)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # the library, also in a rule conda env
from bayes_transfer.audit.cells import read_tables, run_audit, write_audit
from bayes_transfer.audit.claims import TABLE_FILES, AuditSettings
from bayes_transfer.logs import job_log

with job_log(snakemake.log[0], "audit") as log:
    settings = AuditSettings.from_config(snakemake.params.audit)
    inputs = dict(snakemake.input.items())
    tables = read_tables({name: inputs.get(name) for name in TABLE_FILES})
    log.info("tables: %s", {k: (None if v is None else len(v)) for k, v in tables.items()})
    result = run_audit(tables, settings)
    write_audit(result, dict(snakemake.output.items()), settings)
    for row in result["claims"].itertuples():
        log.info("%s: %s", row.claim, row.verdict)
