"""Glue: the positive and negative controls through the library's stages, judged by the audit's C3, C4, C10
(bayes_transfer.controls.standalone.run_controls; docs/controls.md)."""

from pathlib import Path

from bayes_transfer.controls.run import ControlSettings
from bayes_transfer.controls.standalone import run_controls
from bayes_transfer.logs import job_log
from bayes_transfer.stages.experiment import set_threads

out = snakemake.output
with job_log(snakemake.log[0], f"controls {list(snakemake.params.variants)}") as log:
    set_threads(snakemake.threads)
    settings = ControlSettings(**snakemake.params.settings)
    # run_control makes the stages know the control task and network (bayes_transfer.controls.registry)
    summary = run_controls(Path(out.claims).parent, settings, variants=list(snakemake.params.variants))
    for variant, c in summary["controls"].items():
        log.info("%s control (%s CPU-s): %s (%s)", variant, c["cpu_s"], "PASS" if c["outcome"]["passed"] else "FAIL",
                 c["outcome"]["why"])
        for row in c["claims"]:
            log.info("  %s: %s (%s %+.2f %s, p %.2g, %s pairs)", row["claim"], row["verdict"], row["decisive_part"],
                     row["effect"], row["unit"], row["p_value"], row["n_pairs"])
    missing = [p for p in out if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"controls: run_controls did not write {missing}")
