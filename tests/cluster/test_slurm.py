"""The smoke config through the Slurm profiles on a one-node Slurm cluster started here (Debian's slurm-wlm): the
Slurm executor's (workflow/profiles/slurm) and the cluster-generic one's (workflow/profiles/cluster-generic: sbatch,
its status.py, scancel).

The cluster (fixture ``slurm_cluster``, tests/cluster/conftest.py) is private to the test session and skipped, with
the reason, where Slurm cannot be installed or started.
"""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from slurm_support import ROOT, copy_env, cpu_generic_profile, cpu_profile
from slurm_support import run as _run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

COMPUTE_RULES = ("pretrain", "learn_prior", "tune", "fit")


def test_profile_requests_a_gpu_for_every_training_rule():
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["rerun-incomplete"] and profile["retries"] >= 1
    resources = profile["set-resources"]
    for rule in ("learn_prior", "tune", "fit"):
        assert resources[rule]["gpu"] == 1 and resources[rule]["cpus_per_gpu"] >= 1 and resources[rule]["runtime"]


def test_smoke_config_runs_as_slurm_jobs(slurm_cluster, tmp_path, copy_workflow):
    copy_workflow(tmp_path, extra=("src",))
    env = copy_env(slurm_cluster["env"], tmp_path)
    cpu_profile(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "configs/smoke.yaml",
           "--workflow-profile", "workflow/profiles/slurm", "--executor", "slurm",
           "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-keep-successful-logs",
           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3"]
    out = _run(cmd, cwd=tmp_path, env=env, timeout=1500)
    assert out.returncode == 0, (out.stdout[-4000:] + out.stderr[-4000:])

    res = tmp_path / "results"
    assert (res / "tables" / "runs.csv").stat().st_size > 0
    smoke = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    runs = list((res / "runs").rglob("seed*.json"))
    assert len(runs) >= len(smoke["methods"]) * len(smoke["sizes"]) * len(smoke["seeds"])

    # every compute rule ran as a Slurm job (the controller remembers finished jobs for MinJobAge)
    jobs = _run(["scontrol", "show", "job", "-o"], env=env, timeout=30).stdout.splitlines()
    completed = [j for j in jobs if "JobState=COMPLETED" in j]
    comments = re.findall(r"Comment=(\S+)", " ".join(completed))  # rule_<rule>_wildcards_... / rule_<group>_<rule>
    for rule in COMPUTE_RULES:
        assert any(c == f"rule_{rule}" or c.startswith(f"rule_{rule}_wildcards") for c in comments) or (
            f"rule_convert_{rule}" in comments), (rule, comments)
    assert "rule_convert_pretrain" in comments  # the profile's group: conversions share a submission
    assert not any(c.startswith(("rule_aggregate", "rule_tables")) for c in comments)  # local rules
    logs = tmp_path / ".snakemake" / "slurm_logs"
    assert any((logs / f"rule_{rule}").exists() for rule in ("fit", "tune")), list(logs.iterdir())
    assert not any(j for j in jobs if "JobState=FAILED" in j)


def test_smoke_config_runs_as_sbatch_jobs_through_the_cluster_generic_profile(slurm_cluster, tmp_path,
                                                                            copy_workflow):
    copy_workflow(tmp_path, extra=("src",))
    env = copy_env(slurm_cluster["env"], tmp_path)
    cpu_generic_profile(tmp_path)
    before = set(re.findall(r"JobId=(\d+)", _run(["scontrol", "show", "job", "-o"], env=env).stdout))
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "configs/smoke.yaml",
           "--workflow-profile", "workflow/profiles/cluster-generic", "--seconds-between-status-checks", "3"]
    out = _run(cmd, cwd=tmp_path, env=env, timeout=1500)
    assert out.returncode == 0, (out.stdout[-4000:] + out.stderr[-4000:])
    assert (tmp_path / "results" / "tables" / "runs.csv").stat().st_size > 0

    # the jobs Snakemake submitted (it logs the external ids that sbatch --parsable printed) ...
    submitted = set(re.findall(r"with external jobid '(\d+)'", out.stdout + out.stderr))
    assert submitted
    # ... are the jobs Slurm ran for this test, all COMPLETED, named <rule>-<jobid> (a group job: GROUP-<id>)
    jobs = [j for j in _run(["scontrol", "show", "job", "-o"], env=env, timeout=30).stdout.splitlines()
            if re.search(r"JobId=(\d+)", j).group(1) not in before]
    assert {re.search(r"JobId=(\d+)", j).group(1) for j in jobs} == submitted
    assert all("JobState=COMPLETED" in j for j in jobs), [j[:200] for j in jobs if "COMPLETED" not in j]
    names = re.findall(r"JobName=(\S+)", " ".join(jobs))
    for rule in ("learn_prior", "tune", "fit"):
        assert any(n.startswith(f"{rule}-") for n in names), (rule, names)
    assert any(n.startswith("GROUP-") for n in names)  # the conversions (pretrain) share a submission
    assert not any(n.startswith(("aggregate-", "tables-")) for n in names)  # local rules
    # the requested resources reached sbatch
    assert all("MinMemoryNode=400M" in j and "TimeLimit=00:10:00" in j for j in jobs if "JobName=fit-" in j)
    # every job's output went to its rule's log folder
    logs = tmp_path / ".snakemake" / "cluster_logs"
    assert {p.stem for p in logs.rglob("*.log")} == submitted
    fit_log = (logs / "fit" / f"{min(_ids(jobs, 'fit-'))}.log").read_text()
    assert "(Rule: fit)" in fit_log and "1 of 1 steps (100%) done" in fit_log


def _ids(jobs: list[str], name_prefix: str) -> set[str]:
    return {re.search(r"JobId=(\d+)", j).group(1) for j in jobs if f"JobName={name_prefix}" in j}
