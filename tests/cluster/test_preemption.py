"""Preemption on the one-node Slurm cluster: the Slurm profile's sweep survives a requeued and a killed job.

The smoke config, trimmed to the stages a sweep is made of (pre-training, SWAG prior, tuning, fits, aggregation)
and with every fit saving its state every 2 steps (``resume.checkpoint_every``, as the paper config does every
1,000), runs twice through workflow/profiles/slurm (the Slurm executor, ``slurm-requeue``, ``retries``):

- uninterrupted, the reference;
- interrupted: once a fit job has saved a state mid-fit, Slurm requeues it (``scontrol requeue``, what a
  preemption with PreemptMode=REQUEUE does: the job is stopped and starts again from its batch script); once the
  other method's fit job has saved one, it is killed (``scancel``: Snakemake sees the job fail and submits it
  again, its ``retries``).

The interrupted run must finish (rc 0); both interrupted jobs continue from their saved states ("resumed at
step" in their logs); no job that had finished when an interruption landed runs again (its outputs keep their
modification times, and Snakemake's log reports every job finished once); the tables, the audit and the figures
equal the uninterrupted run's byte for byte (the runs' ``wall_time_s`` column aside). Each run's jobs import the
code copied with it (:func:`~slurm_support.copy_env`). Before, the jobs imported the checkout's tree (the
editable install) and recorded its commit as ``code_version``, a column of ``runs.csv``: the one failure seen, in
a full slow suite during which commits landed, is explained by that (the test passed alone twice, 2026-12-01 and 2026-12-02).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from chaos_support import differing_tables, finished_jobs, unreadable_files
from slurm_support import copy_env, cpu_profile, run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

#: the trimmed smoke config: two methods, two sizes, two seeds; a job per (pre-training, method) fits all four
#: cells (workflow.sizes_per_job all), 40 steps each, a state every 2
PREEMPT_CONFIG = {
    "methods": ["sgd_transfer", "bnn_learned_prior"],
    "sizes": [10, 25],
    "seeds": [0, 1],
    "train": {"steps": 40},
    "resume": {"checkpoint_every": 2},
    "prior": {"variants": []},
    "ablations": {"rank": {"methods": []}, "lambda": {"methods": []}, "learned_mean": {"methods": []},
                  "landscape": {"enabled": False}},
    "segmentation": {"enabled": False},
}
#: what happens to each method's fit job once it has saved a state
INTERRUPTIONS = {"sgd_transfer": "requeue", "bnn_learned_prior": "cancel"}


def _prepare(copy_workflow, dest: Path) -> Path:
    work = copy_workflow(dest, extra=("src",))
    cpu_profile(work, retries=2)  # the cancelled job needs one resubmission; a broken one fails soon
    (work / "preempt.yaml").write_text(yaml.safe_dump(PREEMPT_CONFIG))  # an overlay on configs/smoke.yaml
    return work


def _command() -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "configs/smoke.yaml", "preempt.yaml",
            "--workflow-profile", "workflow/profiles/slurm", "--executor", "slurm",
            "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-keep-successful-logs",
            "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]


def _running_fit_job(method: str, env: dict) -> str | None:
    """The Slurm id of the running fit job of ``method`` (its comment: rule_fit_wildcards_<pretraining>_<method>)."""
    out = run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], env=env, timeout=30).stdout
    for line in out.splitlines():
        jobid, _, comment = line.partition("|")
        if comment.startswith("rule_fit_wildcards_") and comment.endswith(f"_{method}"):
            return jobid.strip()
    return None


def _outputs_of_finished_jobs(work: Path) -> dict[Path, int]:
    """Every output of every job Snakemake has reported finished, with its modification time now."""
    times = {}
    for _, _, outputs in finished_jobs(work):
        for name in filter(None, (o.strip() for o in outputs.split(","))):
            path = work / name
            if path.is_file():
                times[path] = path.stat().st_mtime_ns
    return times


def _job_record(jobid: str, env: dict) -> str:
    return run(["scontrol", "show", "job", "-o", jobid], env=env, timeout=30).stdout


def test_requeued_and_killed_fit_jobs_resume_redo_nothing_finished_and_end_with_the_reference_tables(
        slurm_cluster, tmp_path, copy_workflow):
    reference = _prepare(copy_workflow, tmp_path / "reference")
    out = run(_command(), cwd=reference, env=copy_env(slurm_cluster["env"], reference), timeout=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    plan = Counter(rule for _, rule, _ in finished_jobs(reference))
    assert plan["fit"] == 2 and plan["tune"] == 2, plan

    work = _prepare(copy_workflow, tmp_path / "preempted")
    env = copy_env(slurm_cluster["env"], work)
    log = open(tmp_path / "preempted.log", "w")
    proc = subprocess.Popen(_command(), cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    pending, done, finished_before = dict(INTERRUPTIONS), {}, {}
    deadline = time.time() + 1500
    while pending and proc.poll() is None and time.time() < deadline:
        for method, action in list(pending.items()):
            if not list((work / "results" / "runs").rglob(f"{method}/*/*.ckpt")):
                continue  # no state saved yet: the job has not started fitting (or is not running)
            jobid = _running_fit_job(method, env)
            if jobid is None:
                continue
            for path, mtime in _outputs_of_finished_jobs(work).items():
                finished_before.setdefault(path, mtime)
            cmd = ["scontrol", "requeue", jobid] if action == "requeue" else ["scancel", jobid]
            res = run(cmd, env=env, timeout=30)
            assert res.returncode == 0, (cmd, res.stderr)
            done[method] = jobid
            del pending[method]
        time.sleep(0.02)
    try:
        rc = proc.wait(timeout=max(deadline - time.time(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "preempted.log").read_text()
    assert not pending, f"these jobs finished before they could be interrupted: {pending}\n{text[-3000:]}"
    assert rc == 0, text[-6000:]

    # Slurm did what was asked: the requeued job ran again under its id, the killed one ended CANCELLED and a
    # new submission of the same rule and wildcards completed
    requeued = _job_record(done["sgd_transfer"], env)
    assert "JobState=COMPLETED" in requeued and int(re.search(r"Restarts=(\d+)", requeued).group(1)) >= 1, requeued
    cancelled = _job_record(done["bnn_learned_prior"], env)
    assert "JobState=CANCELLED" in cancelled, cancelled
    comment = re.search(r"Comment=(\S+)", cancelled).group(1)
    records = run(["scontrol", "show", "job", "-o"], env=env, timeout=30).stdout.splitlines()
    assert any(f"Comment={comment} " in r and "JobState=COMPLETED" in r for r in records), comment
    # each continued from the state it had saved, and left no state behind
    for method in INTERRUPTIONS:
        fit_log = (work / "results" / "logs" / "fit" / "supervised" / f"{method}.log").read_text()
        assert "resumed at step" in fit_log, (method, fit_log[-2000:])
    assert not list((work / "results").rglob("*.ckpt"))
    problems, temporaries = unreadable_files(work / "results")
    assert not problems and not temporaries, (problems, temporaries)

    # nothing finished was redone: same files, and every job reported finished exactly once, as in the plan
    assert finished_before, "no job had finished when the interruptions landed"
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} had finished before an interruption and was redone"
    jobs = Counter((rule, outputs) for _, rule, outputs in finished_jobs(work))
    assert not {job: n for job, n in jobs.items() if n > 1}, jobs
    assert Counter(rule for rule, _ in jobs) == plan

    diffs = differing_tables(reference, work, dirs=("results/tables", "results/audit", "results/figures"))
    assert not diffs, f"the preempted run's outputs differ from the uninterrupted run's: {diffs}"
