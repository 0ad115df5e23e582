"""The smoke config through the Slurm profiles on a one-node Slurm cluster started here (Debian's slurm-wlm): the
Slurm executor's (workflow/profiles/slurm) and the cluster-generic one's (workflow/profiles/cluster-generic: sbatch,
its status.py, scancel).

The cluster is private to the test: spool directories, logs and ports live in a temporary directory. Its
slurm.conf is written to /etc/slurm/slurm.conf (the job steps inside a job look for it there) and the file that
was there before, if any, is put back at the end. munge is started only if no munged answers yet. Every daemon
the test starts is stopped by its pid at the end. Skipped, with the reason, where Slurm cannot be installed or
started (not root, no apt-get, no network for the packages, daemons failing).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

COMPUTE_RULES = ("pretrain", "learn_prior", "tune", "fit")


def _run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _skip(reason: str, log: Path | None = None):
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    pytest.skip(f"Slurm cannot start here: {reason}{tail}")


def _install_slurm() -> None:
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return
    if not shutil.which("apt-get"):
        _skip("slurmctld is not installed and there is no apt-get to install Debian's slurm-wlm")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]
    out = _run(install, timeout=900, env=env)
    if out.returncode != 0:  # the package lists may be missing or stale
        _run(["apt-get", "update", "-q"], timeout=600, env=env)
        out = _run(install, timeout=900, env=env)
    if out.returncode != 0 or not shutil.which("slurmctld"):
        _skip(f"apt-get install slurm-wlm munge failed (exit {out.returncode}): {out.stderr[-800:]}")


def _munge_works() -> bool:
    try:
        enc = _run(["munge", "-n"], timeout=20)
        return enc.returncode == 0 and _run(["unmunge"], input=enc.stdout, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> int | None:
    """Start munged as user munge unless one answers already; return its pid if this test started it."""
    if _munge_works():
        return None
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/etc/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        _run(["runuser", "-u", "munge", "--", "mungekey", "--create"], timeout=60)
    out = _run(["runuser", "-u", "munge", "--", "munged"], timeout=60)
    if out.returncode != 0:
        _skip(f"munged did not start: {out.stderr[-500:]}")
    for _ in range(50):
        if _munge_works():
            break
        time.sleep(0.2)
    else:
        _skip("munged started but munge -n | unmunge does not succeed")
    pid_file = Path("/run/munge/munged.pid")
    return int(pid_file.read_text().strip()) if pid_file.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_conf(base: Path) -> Path:
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


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("Slurm cannot start here: the test starts munged/slurmctld/slurmd and needs root on Linux")
    _install_slurm()
    munged = _start_munge()
    base = tmp_path_factory.mktemp("slurm")
    conf = Path("/etc/slurm/slurm.conf")
    backup = base / "slurm.conf.before"
    if conf.exists():
        shutil.copy2(conf, backup)
    conf.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_write_conf(base), conf)
    env = dict(os.environ, SLURM_CONF=str(conf))
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                            stderr=open(base / f"{daemon}.stderr", "w")))
            time.sleep(1)
        for _ in range(60):
            if any(d.poll() is not None for d in daemons):
                _skip("a Slurm daemon exited", base / "slurmctld.log")
            sinfo = _run(["sinfo", "-h", "-o", "%t"], env=env, timeout=20)
            if sinfo.returncode == 0 and sinfo.stdout.strip() in ("idle", "mix", "alloc"):
                break
            time.sleep(1)
        else:
            _skip(f"the node never became idle (sinfo: {sinfo.stdout.strip()} {sinfo.stderr.strip()})",
                  base / "slurmd.log")
        yield {"env": env, "base": base}
    finally:
        for d in reversed(daemons):
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
                try:
                    d.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    d.kill()
        if munged is not None:
            try:
                os.kill(munged, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if backup.exists():
            shutil.copy2(backup, conf)
        else:
            conf.unlink(missing_ok=True)


def test_profile_requests_a_gpu_for_every_training_rule():
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["rerun-incomplete"] and profile["retries"] >= 1
    resources = profile["set-resources"]
    for rule in ("learn_prior", "tune", "fit"):
        assert resources[rule]["gpu"] == 1 and resources[rule]["cpus_per_gpu"] >= 1 and resources[rule]["runtime"]


def _cpu_profile(workdir: Path) -> None:
    """The repository's Slurm profile with the GPU requests taken out (the test cluster has no GPU) and
    requests that fit one small node; everything else (executor, retries, groups, requeue) unchanged."""
    path = workdir / "workflow/profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    small = {"runtime": 10, "mem_mb": 400, "cpus_per_task": 1}
    profile["default-resources"] = dict(small)
    profile["set-resources"] = {rule: dict(small) for rule in profile["set-resources"]}
    profile["jobs"] = 4
    profile["latency-wait"] = 5
    profile["retries"] = 1  # a broken job should fail the test soon, not after ten resubmissions
    path.write_text(yaml.safe_dump(profile))


def test_smoke_config_runs_as_slurm_jobs(slurm_cluster, tmp_path, copy_workflow):
    env = slurm_cluster["env"] | {"OMP_NUM_THREADS": "1"}
    copy_workflow(tmp_path, extra=("src",))
    _cpu_profile(tmp_path)
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


def _cpu_generic_profile(workdir: Path) -> None:
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


def test_smoke_config_runs_as_sbatch_jobs_through_the_cluster_generic_profile(slurm_cluster, tmp_path,
                                                                            copy_workflow):
    env = slurm_cluster["env"] | {"OMP_NUM_THREADS": "1"}
    copy_workflow(tmp_path, extra=("src",))
    _cpu_generic_profile(tmp_path)
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
