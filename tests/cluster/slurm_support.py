"""Helpers of the Slurm tests (tests/cluster): install and start a one-node Slurm cluster (Debian's slurm-wlm),
and the repository's profiles cut down to fit it.

The cluster is private to the test session: spool directories, logs and ports live in a temporary directory. Its
slurm.conf is written to /etc/slurm/slurm.conf (the job steps inside a job look for it there) and the file that
was there before, if any, is put back at the end. munge is started only if no munged answers yet. Every daemon
the fixture starts is stopped by its pid at the end. Skipped, with the reason, where Slurm cannot be installed or
started (not root, no apt-get, no network for the packages, daemons failing).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def skip(reason: str, log: Path | None = None):
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    pytest.skip(f"Slurm cannot start here: {reason}{tail}")


def install_slurm() -> None:
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return
    if not shutil.which("apt-get"):
        skip("slurmctld is not installed and there is no apt-get to install Debian's slurm-wlm")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]
    out = run(install, timeout=900, env=env)
    if out.returncode != 0:  # the package lists may be missing or stale
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        out = run(install, timeout=900, env=env)
    if out.returncode != 0 or not shutil.which("slurmctld"):
        skip(f"apt-get install slurm-wlm munge failed (exit {out.returncode}): {out.stderr[-800:]}")


def _munge_works() -> bool:
    try:
        enc = run(["munge", "-n"], timeout=20)
        return enc.returncode == 0 and run(["unmunge"], input=enc.stdout, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munge() -> int | None:
    """Start munged as user munge unless one answers already; return its pid if this test started it."""
    if _munge_works():
        return None
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        run(["runuser", "-u", "munge", "--", "mungekey", "--create"], timeout=60)
    out = run(["runuser", "-u", "munge", "--", "munged"], timeout=60)
    if out.returncode != 0:
        skip(f"munged did not start: {out.stderr[-500:]}")
    for _ in range(50):
        if _munge_works():
            break
        time.sleep(0.2)
    else:
        skip("munged started but munge -n | unmunge does not succeed")
    pid_file = Path("/run/munge/munged.pid")
    return int(pid_file.read_text().strip()) if pid_file.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(base: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    meminfo = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) // 1024
    for d in ("ctld", "d"):
        (base / d).mkdir(parents=True, exist_ok=True)
    conf = base / "slurm.conf"
    conf.write_text(f"""ClusterName=bayestest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={base}/ctld
SlurmdSpoolDir={base}/d
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
SlurmUser=root
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={max(available - 1024, 1024)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def copy_env(env: dict, workdir: Path) -> dict:
    """``env`` for a workflow copy whose jobs import the copy's own ``src`` (copied with it), not the editable
    install's tree: an edit or a commit in the checkout while a long cluster test runs cannot change the code
    (or the ``code_version`` the runs record) between the runs the test compares."""
    return env | {"PYTHONPATH": str(workdir / "src"), "OMP_NUM_THREADS": "1"}


def cpu_profile(workdir: Path, retries: int = 1) -> None:
    """The repository's Slurm profile with the GPU requests taken out (the test cluster has no GPU) and
    requests that fit one small node; everything else (executor, retries, groups, requeue) unchanged."""
    path = workdir / "workflow/profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    small = {"runtime": 10, "mem_mb": 400, "cpus_per_task": 1}
    profile["default-resources"] = dict(small)
    profile["set-resources"] = {rule: dict(small) for rule in profile["set-resources"]}
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = retries  # a broken job should fail the test soon, not after ten resubmissions
    path.write_text(yaml.safe_dump(profile))


def cpu_generic_profile(workdir: Path) -> None:
    """The repository's cluster-generic profile (sbatch / status.py / scancel) with the GPU requests set to 0 and
    requests that fit one small node; the commands, groups and everything else unchanged."""
    path = workdir / "workflow/profiles/cluster-generic/config.yaml"
    profile = yaml.safe_load(path.read_text())
    small = {"runtime": 10, "mem_mb": 400, "cpus_per_task": 1, "gpu": 0}
    profile["default-resources"] = dict(small)
    profile["set-resources"] = {rule: dict(small) for rule in profile["set-resources"]}
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = 1
    path.write_text(yaml.safe_dump(profile))
