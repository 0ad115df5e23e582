"""The controls rule in the workflow (workflow/rules/controls.smk, docs/controls.md): planned in the embedded
default as an input of the audit, absent from the smoke config and the sweep's experiments, and (slow) writing its
files when run on its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bayes_transfer.config.experiments import merged, sweep_experiments
from bayes_transfer.config.schema import prepare_config

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CONTROLS = ["results/controls/claims.csv", "results/controls/parts.csv", "results/controls/controls.json",
            "results/controls/runs_positive.csv", "results/controls/runs_negative.csv"]


def snakemake(*args, cwd, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _planned(out) -> dict[str, int]:
    """rule -> job count of a ``--quiet rules`` dry run."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M)}


def test_default_plans_one_controls_job_that_the_audit_needs(workdir):
    out = snakemake("-n", "--cores", "2", "--quiet", "rules", cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _planned(out).get("controls") == 1 and _planned(out).get("audit") == 1
    # the audit's own target pulls the controls in (its input when controls.enabled)
    audit = snakemake("results/audit/claims_overview.html", "-n", "--cores", "1", "--quiet", "rules", cwd=workdir)
    assert audit.returncode == 0, audit.stderr[-3000:]
    assert _planned(audit).get("controls") == 1
    alone = snakemake("-n", "--cores", "1", "-p", CONTROLS[0], cwd=workdir)
    assert alone.returncode == 0, alone.stderr[-3000:]
    text = alone.stdout + alone.stderr
    assert "rule controls:" in text and all(path in text for path in CONTROLS)
    assert "results/logs/controls.log" in text and "results/benchmarks/controls.tsv" in text


def test_smoke_config_still_plans_and_runs_no_controls(workdir):
    out = snakemake("-n", "--cores", "2", "--quiet", "rules", "--configfile", "configs/smoke.yaml", cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    planned = _planned(out)
    assert "controls" not in planned and planned.get("audit") == 1


def test_paper_config_runs_the_controls_once_not_per_sweep_experiment():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    paper = prepare_config(merged(base, yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())))
    assert paper["controls"]["enabled"]
    experiments = sweep_experiments(paper)
    assert experiments and not any(cfg["controls"]["enabled"] for cfg in experiments.values())


@pytest.mark.slow
def test_the_controls_rule_writes_its_files(workdir):
    """Two sizes and two seeds (4 pairs per part: the verdicts are not the point here, the files are)."""
    out = snakemake(CONTROLS[0], "--cores", "1", "--config", "controls={sizes: [10, 30], seeds: [0, 1]}",
                    cwd=workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = workdir / "results"
    claims = pd.read_csv(res / "controls" / "claims.csv")
    assert sorted(zip(claims["control"], claims["claim"])) == sorted(
        (v, c) for v in ("positive", "negative") for c in ("C3", "C4", "C10"))
    summary = json.loads((res / "controls" / "controls.json").read_text())
    assert set(summary["controls"]) == {"positive", "negative"}
    for variant in ("positive", "negative"):
        runs = pd.read_csv(res / "controls" / f"runs_{variant}.csv")
        assert set(runs["dataset"]) == {f"control_{variant}"} and set(runs["n_train"]) == {10, 30}
        assert runs["path"].nunique() == 6 * 2 * 2 and runs["success"].all()
    assert (res / "benchmarks" / "controls.tsv").exists() and "done: controls" in (res / "logs" / "controls.log").read_text()
