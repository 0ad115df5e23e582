"""Chaos: the workflow SIGKILLed at random moments, recovered as docs/resuming.md says, ends as if never killed.

An uninterrupted reference run, then K rounds of starting the workflow and SIGKILLing, at a moment drawn from a
seeded generator (once a drawn number of jobs has finished, then a drawn delay), alternately the whole Snakemake
process group (a lost node) and one running job (a killed rule script). After every kill no result file may be
half-written or unparsable; the recovery is the documented one (``--unlock``, then the same command with
``--rerun-incomplete``). At the end the tidy tables equal the reference's byte for byte (the runs' ``wall_time_s``
column aside) and no job that had finished ran again.

Replay a failure with ``CHAOS_SEED=<seed printed> pytest tests/workflow/test_chaos.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import numpy as np
import pytest
import yaml

from chaos_support import (differing_tables, finished_jobs, incomplete_outputs, kill_group, running_jobs,
                           snakemake, start, unreadable_files, wait_until)

ROUNDS = 6  # K >= 5: three kills of Snakemake, three of a job
#: the smoke config trimmed to the stages a sweep is made of: pre-training, SWAG prior, tuning (a job per
#: method), fits (2 methods x 2 sizes x 2 seeds, a job per method: workflow.sizes_per_job all) and the
#: aggregation (tidy tables, figures, audit); no prior variants, ablations or segmentation (each only more jobs of the same kinds)
CHAOS_CONFIG = {
    "methods": ["sgd_transfer", "bnn_learned_prior"],
    "sizes": [10, 25],
    "seeds": [0, 1],
    "prior": {"variants": []},
    "ablations": {"rank": {"methods": []}, "lambda": {"methods": []}, "learned_mean": {"methods": []},
                  "landscape": {"enabled": False}},
    "segmentation": {"enabled": False},
}
ARGS = ("--cores", "2", "--configfile", "configs/smoke.yaml", "chaos.yaml")


def _prepare(copy_workflow, dest):
    work = copy_workflow(dest)
    (work / "chaos.yaml").write_text(yaml.safe_dump(CHAOS_CONFIG))
    return work


@pytest.mark.slow
def test_random_kills_recovered_end_with_the_reference_tables_and_redo_no_finished_job(tmp_path, copy_workflow):
    seed = int(os.environ.get("CHAOS_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"chaos seed: {seed} (replay with CHAOS_SEED={seed})")
    rng = np.random.default_rng(seed)
    msg = f"[CHAOS_SEED={seed}]"

    reference = _prepare(copy_workflow, tmp_path / "reference")
    began = time.time()
    out = snakemake(reference, *ARGS)
    wall = time.time() - began
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plan = Counter(rule for _, rule, _ in finished_jobs(reference))
    assert plan["fit"] == 2 and plan["tune"] == 2 and plan["learn_prior"] == 1 and plan["pretrain"] == 1, plan
    print(f"reference run: {wall:.0f} s, jobs {dict(plan)}")

    n_jobs = sum(plan.values()) - 1  # `all` aside
    progress = np.sort(rng.choice(n_jobs - 2, size=ROUNDS, replace=False))  # jobs finished at each kill
    per_job = wall / n_jobs * 2  # seconds a job takes on one of the 2 cores, on average
    print(f"kills after {progress.tolist()} of {n_jobs} jobs finished")
    work = _prepare(copy_workflow, tmp_path / "chaos")
    kills, finished_before = [], {}
    for k in range(ROUNDS):
        if k:
            assert snakemake(work, "--unlock", *ARGS).returncode == 0, msg
        began_round = time.time()
        proc = start(work, *ARGS, *(("--rerun-incomplete",) if k else ()))
        mode = "snakemake" if k % 2 == 0 else "job"
        # the moment: once the k-th drawn number of jobs has finished (so the kills spread over the whole DAG,
        # whatever the machine's speed), then a random part of a typical job's time
        wait_until(lambda: len(finished_jobs(work)) >= progress[k] or proc.poll() is not None, timeout=900)
        time.sleep(float(rng.uniform(0, per_job)))
        at = time.time() - began_round
        if mode == "job":  # one of the rule scripts running now (the first that starts if none is yet)
            wait_until(lambda: running_jobs(proc.pid) or proc.poll() is not None, timeout=120)
            jobs = running_jobs(proc.pid)
            if jobs:
                victim = int(rng.choice(list(jobs)))
                os.kill(victim, signal.SIGKILL)
                kills.append(f"round {k}: t={at:.1f}s job {jobs[victim]} (pid {victim})")
            proc.wait(timeout=900)  # Snakemake lets its other jobs finish, then stops with an error
        elif proc.poll() is None:
            kill_group(proc)
            kills.append(f"round {k}: t={at:.1f}s snakemake")
        else:
            proc.wait()
        problems, temporaries = unreadable_files(work / "results")
        flagged = incomplete_outputs(work)
        assert not problems, f"{msg} after {kills[-1:]}: half-written or unreadable files {problems} " \
                             f"(flagged incomplete: {sorted(flagged)})"
        # a finished table never differs from the reference's (a half-written one would)
        diffs = differing_tables(reference, work, require_all=False)
        assert not diffs, f"{msg} after {kills[-1:]}: tables differ from the reference: {diffs}"
        for path in (work / "results" / "runs").rglob("seed*.json"):
            if not {str(path.relative_to(work)), str(path)} & flagged:
                finished_before.setdefault(path, path.stat().st_mtime_ns)
        print(f"round {k} ({mode}, t={at:.1f}s): {len(finished_before)} runs finished, "
              f"{len(temporaries)} temporary files left {temporaries}")
    assert len(kills) >= 5, f"{msg} the workflow finished before {ROUNDS} kills landed: {kills}"

    assert snakemake(work, "--unlock", *ARGS).returncode == 0, msg
    out = snakemake(work, *ARGS, "--rerun-incomplete")
    assert out.returncode == 0, f"{msg} {kills}\n" + out.stdout[-3000:] + out.stderr[-3000:]
    assert "Nothing to be done" in snakemake(work, "-n", *ARGS).stdout, msg

    diffs = differing_tables(reference, work, dirs=("results/tables", "results/audit", "results/figures"))
    assert not diffs, f"{msg} kills {kills}: final tables differ from the uninterrupted run's: {diffs}"
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{msg} kills {kills}: {path} finished before a kill, redone"
    # from Snakemake's logs of all the rounds: every job finished exactly once; a job killed midway ran again
    done = Counter((rule, outputs) for _, rule, outputs in finished_jobs(work))
    redone = {job: n for job, n in done.items() if n > 1}
    assert not redone, f"{msg} kills {kills}: finished jobs ran again: {redone}"
    assert Counter(rule for rule, _ in done) == plan, f"{msg} kills {kills}: jobs run {done} != plan {plan}"
    print(f"kills: {kills}")
