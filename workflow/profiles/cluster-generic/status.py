#!/usr/bin/env python3
"""Status command of the cluster-generic profile for Slurm: prints running, success or failed for one job id.

    status.py JOBID            (Snakemake calls it every --seconds-between-status-checks per active job)

The state comes from the controller first (squeue, then scontrol: both know pending, running and recently
finished jobs, for MinJobAge seconds after the end, and work where Slurm accounting is off), else from the
accounting database (sacct, for jobs the controller has forgotten). A job no source knows is failed (Snakemake
retries it); when no source could be asked at all (the controller busy or down), the job counts as running and the
next check asks again. Python 3.6+ and the Slurm commands on PATH; nothing else.
"""

import re
import subprocess
import sys

RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
           "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
SUCCESS = {"COMPLETED"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
          "REVOKED", "SPECIAL_EXIT"}


def _ask(cmd):
    """(stdout, answered): answered is False when the command is missing, timed out or could not reach Slurm;
    an unknown job id is an answer (empty stdout)."""
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "", False
    if out.returncode == 0:
        return out.stdout, True
    return "", "invalid job id" in out.stderr.lower()


def _first_state(text):
    """The first state word of command output ("CANCELLED by 0" -> "CANCELLED")."""
    for line in text.splitlines():
        words = line.strip().split()
        if words:
            return words[0].rstrip("+").upper()
    return None


def job_state(jobid):
    """(state or None, whether any source answered)."""
    answered = False
    out, ok = _ask(["squeue", "--noheader", "--states=all", "--jobs", jobid, "--format=%T"])
    answered |= ok
    state = _first_state(out)
    if state:
        return state, True
    out, ok = _ask(["scontrol", "--oneliner", "show", "job", jobid])
    answered |= ok
    m = re.search(r"\bJobState=(\S+)", out)
    if m:
        return m.group(1).upper(), True
    out, ok = _ask(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", jobid, "--format=State"])
    answered |= ok
    return _first_state(out), answered


def status(state, answered):
    if state in SUCCESS:
        return "success"
    if state in RUNNING:
        return "running"
    if state in FAILED:
        return "failed"
    if state is None and not answered:
        return "running"
    return "failed"


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: status.py JOBID")
    jobid = argv[1].split(";")[0].strip()  # sbatch --parsable prints "id" or "id;cluster"
    state, answered = job_state(jobid)
    result = status(state, answered)
    if state is None:
        print("status.py: Slurm job %s: %s" % (jobid, "unknown to squeue, scontrol and sacct" if answered
                                               else "no Slurm command answered; asking again later"),
              file=sys.stderr)
    elif result == "failed" and state not in FAILED:
        print("status.py: Slurm job %s has the unexpected state %s" % (jobid, state), file=sys.stderr)
    print(result)


if __name__ == "__main__":
    main(sys.argv)
